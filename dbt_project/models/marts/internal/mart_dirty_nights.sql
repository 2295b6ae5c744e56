{{ config(materialized='table') }}

-- The nights whose marts rows this run rebuilds (every night on a full refresh or a first build).
-- A night is dirty when
-- 1. harmonise re-converted it (int_declarations_converted's dirty set of its latest run);
-- 2. it has a landed file that is in neither the routed rows nor the quarantine yet;
-- 3. it has held rows (a hold may have been lifted, a rate may have arrived);
-- 4. an active feed hold covers rows the marts do not hold yet;
-- 5. a critical quality failure covers a row the marts have as ok, or a row quarantined for quality
--    lost its failure (the gate was rerun).

{%- set from_scratch = ts_marts_from_scratch() %}
{%- set converted = ref('int_declarations_converted') %}
{%- set converted_dirty = ts_existing('int_declarations_converted__dirty', converted.schema) %}
{%- set quarantine = ts_existing('fct_quarantine') %}

with

landed_files as (
    select
        feed,
        night,
        source_file
    from {{ source('raw', 'landed_files') }}
    where feed <> 'exchange_rates'
),

dirty as (
    {%- if from_scratch %}
    -- sqlfluff indents this branch as if inside the other one
    select night from landed_files  -- noqa: LT02
    union  -- noqa: LT02
    select night from {{ source('raw', 'parse_rejects') }}  -- noqa: LT02
    {%- else %}
    {%- set routed = this.schema ~ '.mart_declarations_routed' %}
    {%- if converted_dirty is not none %}
    select night from {{ converted_dirty }}
    union
    {%- endif %}
    select lf.night
    from landed_files as lf
    where
        not exists (select 1 from {{ routed }} as r where r.source_file = lf.source_file)
        {%- if quarantine is not none %}
        and not exists (select 1 from {{ quarantine }} as q where q.source_file = lf.source_file)
        {%- endif %}
    union
    select night from {{ routed }}
    where route = 'held'
    union
    select h.night
    from {{ source('ops', 'feed_holds') }} as h
    where
        h.lifted_at is null
        and exists (
            select 1 from {{ routed }} as r
            where r.feed = h.feed and r.night = h.night and r.route <> 'held'
        )
    union
    select q.night
    from {{ source('ops', 'quality_row_failures') }} as q
    inner join {{ routed }} as r
        on q.feed = r.feed and q.source_file = r.source_file and q.source_line = r.source_line
    where {{ ts_quarantining_failure('q') }} and r.route = 'ok'
    union
    select r.night
    from {{ routed }} as r
    where
        r.stage = 'quality'
        and not exists (
            select 1 from {{ source('ops', 'quality_row_failures') }} as q
            where
                {{ ts_quarantining_failure('q') }}
                and q.feed = r.feed and q.source_file = r.source_file and q.source_line = r.source_line
        )
    {%- endif %}
)

select distinct night from dirty
where night is not null
