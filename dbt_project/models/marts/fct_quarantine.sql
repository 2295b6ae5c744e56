{{ config(
    materialized='incremental',
    incremental_strategy='append',
    on_schema_change='fail',
    pre_hook="{{ ts_delete_dirty_nights() }}"
) }}

-- depends_on: {{ ref('mart_dirty_nights') }}

-- Every row that cannot be used, one row per landed line: lines the CSV reader rejected (parse),
-- rows failing a critical quality expectation (quality) and rows that could not be converted
-- (harmonise). Incremental by night: a run rebuilds the nights in mart_dirty_nights.

with

parse_rejects as (
    select
        feed,
        night,
        source_file,
        source_line,
        min(reason_code) as reason_code,
        string_agg(reason, '; ' order by reason) as reason,
        min(raw_line) as raw_line
    from {{ source('raw', 'parse_rejects') }}
    {%- if is_incremental() %}
    where night in (select d.night from {{ ref('mart_dirty_nights') }} as d)
    {%- endif %}
    group by feed, night, source_file, source_line
),

routed as (
    select * from {{ ref('mart_declarations_routed') }}
    where
        route = 'quarantine'
    {%- if is_incremental() %}
        and night in (select d.night from {{ ref('mart_dirty_nights') }} as d)
        {%- endif %}
)

select
    feed,
    night,
    source_file,
    source_line,
    'parse' as stage,
    reason_code,
    reason,
    cast(null as varchar) as declaration_id,
    {{ ts_json_object(['raw_line']) }} as raw_values
from parse_rejects

union all

select
    feed,
    night,
    source_file,
    source_line,
    stage,
    reason_code,
    reason,
    declaration_id,
    raw_values
from routed
