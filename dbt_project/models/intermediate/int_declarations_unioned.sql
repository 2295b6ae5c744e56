-- Every landed declaration row that can be harmonised tonight: rows of feeds/nights under an
-- active hold, lines the CSV reader rejected and rows that failed the raw-stage quality gates are
-- left out (the marts route them to fct_held_rows / fct_quarantine).

with

landed as (
    select * from {{ ref('int_declarations_landed') }}
),

active_holds as (
    select distinct
        feed,
        night
    from {{ source('ops', 'feed_holds') }}
    where lifted_at is null
),

parse_rejects as (
    select distinct
        feed,
        source_file,
        source_line
    from {{ source('raw', 'parse_rejects') }}
),

quality_failures as (
    select distinct
        feed,
        source_file,
        source_line
    from {{ source('ops', 'quality_row_failures') }}
    where {{ ts_quarantining_failure() }}
)

select landed.*
from landed
where
    not exists (
        select 1 from active_holds as h
        where h.feed = landed.feed and h.night = landed.night
    )
    and not exists (
        select 1 from parse_rejects as r
        where
            r.feed = landed.feed
            and r.source_file = landed.source_file
            and r.source_line = landed.source_line
    )
    and not exists (
        select 1 from quality_failures as q
        where
            q.feed = landed.feed
            and q.source_file = landed.source_file
            and q.source_line = landed.source_line
    )
