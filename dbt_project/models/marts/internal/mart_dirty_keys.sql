{{ config(materialized='table') }}

-- The declaration keys whose current version and history this run rebuilds: every key with an ok
-- row in a dirty night now, or with a row in a dirty night in the marts before this run (a row that
-- has left ok, e.g. quarantined by a late quality failure, changes its key's versions too).

{%- set declarations = ts_existing('fct_declarations') %}
{%- set history = ts_existing('fct_declaration_history') %}

with

dirty_nights as (
    select night from {{ ref('mart_dirty_nights') }}
),

keys as (
    select declaration_key
    from {{ ref('mart_declarations_routed') }}
    where route = 'ok' and night in (select d.night from dirty_nights as d)
    {%- for previous in [declarations, history] if previous is not none %}
    union
    select declaration_key
    from {{ previous }}
    where night in (select d.night from dirty_nights as d)
    {%- endfor %}
)

select distinct declaration_key from keys
where declaration_key is not null
