{{ config(
    materialized='incremental',
    incremental_strategy='append',
    on_schema_change='fail',
    pre_hook="{{ ts_delete_dirty_keys() }}"
) }}

-- depends_on: {{ ref('mart_dirty_keys') }}

-- The unified declarations: one row per declaration key, its latest version (a later night wins,
-- then a later arrival, then a later line; load order never decides). Incremental by declaration
-- key: a run replaces the keys with a version in a dirty night (mart_dirty_keys).

with

versions as (
    {{ ts_declaration_versions(is_incremental()) }}
),

current_versions as (
    select * from versions
    where version_rank = 1
),

converted as (
    select * from {{ ref('int_declarations_converted') }}
)

select
    {{- ts_select_declaration_columns('converted') }}
from converted
inner join current_versions
    on
        converted.night = current_versions.night
        and converted.feed = current_versions.feed
        and converted.source_file = current_versions.source_file
        and converted.source_line = current_versions.source_line
