{{ config(
    materialized='incremental',
    incremental_strategy='append',
    on_schema_change='fail',
    pre_hook="{{ ts_delete_dirty_keys() }}"
) }}

-- depends_on: {{ ref('mart_dirty_keys') }}

-- Versions of declarations replaced by a later one (a later night, or the same night arriving
-- later): same columns as fct_declarations plus the night of the version that replaced them.
-- Incremental by declaration key, as fct_declarations.

with

versions as (
    {{ ts_declaration_versions(is_incremental()) }}
),

replaced_versions as (
    select * from versions
    where version_rank > 1
),

converted as (
    select * from {{ ref('int_declarations_converted') }}
)

select
    {{- ts_select_declaration_columns('converted') }},
    replaced_versions.latest_night as replaced_by_night
from converted
inner join replaced_versions
    on
        converted.night = replaced_versions.night
        and converted.feed = replaced_versions.feed
        and converted.source_file = replaced_versions.source_file
        and converted.source_line = replaced_versions.source_line
