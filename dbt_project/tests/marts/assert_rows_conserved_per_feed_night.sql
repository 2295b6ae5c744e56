{{ config(tags=['critical']) }}

-- Conservation, per feed and night: every landed row (raw rows + parse rejects) is in exactly one of
-- fct_declarations, fct_declaration_history, fct_quarantine, fct_held_rows. Returns the feeds/nights
-- where the counts differ.

with

landed as (
    select
        feed,
        night,
        source_file,
        source_line
    from {{ ref('int_declarations_landed') }}
    union
    select
        feed,
        night,
        source_file,
        source_line
    from {{ source('raw', 'parse_rejects') }}
),

landed_counts as (
    select
        feed,
        night,
        count(*) as landed_rows
    from landed
    group by feed, night
),

accounted as (
    select
        feed,
        night
    from {{ ref('fct_declarations') }}
    union all
    select
        feed,
        night
    from {{ ref('fct_declaration_history') }}
    union all
    select
        feed,
        night
    from {{ ref('fct_quarantine') }}
    union all
    select
        feed,
        night
    from {{ ref('fct_held_rows') }}
),

accounted_counts as (
    select
        feed,
        night,
        count(*) as accounted_rows
    from accounted
    group by feed, night
)

select
    coalesce(l.feed, a.feed) as feed,
    coalesce(l.night, a.night) as night,
    coalesce(l.landed_rows, 0) as landed_rows,
    coalesce(a.accounted_rows, 0) as accounted_rows
from landed_counts as l
full outer join accounted_counts as a
    on l.feed = a.feed and l.night = a.night
where coalesce(l.landed_rows, 0) <> coalesce(a.accounted_rows, 0)
