{{ config(
    materialized='incremental',
    incremental_strategy='append',
    on_schema_change='fail',
    pre_hook="{{ ts_delete_dirty_nights() }}"
) }}

-- depends_on: {{ ref('mart_dirty_nights') }}

-- Where every landed row goes, decided when the marts are built (after the harmonised-stage quality
-- gates): held (feed hold, rate missing), quarantine (quality, harmonise) or ok. Parse rejects are
-- not in the raw tables' rows and go straight to fct_quarantine. Incremental by night: a row's route
-- depends only on its own night's holds, its own line's quality failures and its converted row, so
-- a run rebuilds the nights in mart_dirty_nights; version ranks across nights are computed for the
-- dirty declaration keys by fct_declarations and fct_declaration_history.

with

landed as (
    select
        feed,
        night,
        source_file,
        source_line,
        declaration_id,
        raw_values
    from {{ ref('int_declarations_landed') }}
    {%- if is_incremental() %}
    where night in (select d.night from {{ ref('mart_dirty_nights') }} as d)
    {%- endif %}
),

parse_rejects as (
    select distinct
        feed,
        source_file,
        source_line
    from {{ source('raw', 'parse_rejects') }}
),

active_holds as (
    select
        feed,
        night,
        min(reason_code) as reason_code,
        string_agg(reason_code || ': ' || reason, '; ' order by held_at, reason) as reason
    from {{ source('ops', 'feed_holds') }}
    where lifted_at is null
    group by feed, night
),

quality_failures as (
    select
        feed,
        source_file,
        source_line,
        min(reason_code) as reason_code,
        string_agg(expectation || ': ' || reason, '; ' order by expectation, reason) as reason
    from {{ source('ops', 'quality_row_failures') }}
    where {{ ts_quarantining_failure() }}
    group by feed, source_file, source_line
),

converted as (
    select * from {{ ref('int_declarations_converted') }}
    {%- if is_incremental() %}
    where night in (select d.night from {{ ref('mart_dirty_nights') }} as d)
    {%- endif %}
),

routed as (
    select
        landed.feed,
        landed.night,
        landed.source_file,
        landed.source_line,
        landed.declaration_id,
        landed.raw_values,
        converted.declaration_key,
        converted.arrived_at,
        case
            when active_holds.feed is not null then 'held'
            when quality_failures.feed is not null then 'quarantine'
            when converted.source_line is null then 'held'
            else converted.row_status
        end as route,
        case
            when active_holds.feed is not null then null
            when quality_failures.feed is not null then 'quality'
            when converted.source_line is null then null
            when converted.row_status = 'quarantine' then 'harmonise'
        end as stage,
        case
            when active_holds.feed is not null then 'feed_held'
            when quality_failures.feed is not null then quality_failures.reason_code
            when converted.source_line is null then 'feed_held'
            else converted.reason_code
        end as reason_code,
        case
            when active_holds.feed is not null then concat('feed held for this night: ', active_holds.reason)
            when quality_failures.feed is not null then quality_failures.reason
            when converted.source_line is null
                then 'not harmonised yet (the feed was held when staging ran); harmonised in the next run'
            else converted.reason
        end as reason
    from landed
    left join active_holds
        on landed.feed = active_holds.feed and landed.night = active_holds.night
    left join quality_failures
        on
            landed.feed = quality_failures.feed
            and landed.source_file = quality_failures.source_file
            and landed.source_line = quality_failures.source_line
    left join converted
        on
            landed.feed = converted.feed
            and landed.source_file = converted.source_file
            and landed.source_line = converted.source_line
    where
        not exists (
            select 1 from parse_rejects as r
            where
                r.feed = landed.feed
                and r.source_file = landed.source_file
                and r.source_line = landed.source_line
        )
)

-- The landed values are kept for the quarantined rows only: fct_quarantine shows them, nothing reads
-- them for ok or held rows, and writing every row's JSON again cost a third of this model's time
-- (fct_declarations keeps its own copy from int_declarations_converted).
select
    routed.feed,
    routed.night,
    routed.source_file,
    routed.source_line,
    routed.declaration_id,
    case when routed.route = 'quarantine' then routed.raw_values end as raw_values,
    routed.declaration_key,
    routed.arrived_at,
    routed.route,
    routed.stage,
    routed.reason_code,
    routed.reason
from routed
