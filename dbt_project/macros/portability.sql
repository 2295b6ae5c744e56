{#- SQL that differs between DuckDB (default__) and PostgreSQL (postgres__), other than parsing
    (conversions/parsing.sql). -#}

{#- The value of `col` on the row with the greatest `by` among the rows where `where` holds (an
    aggregate; rows with a NULL `by` are ignored). Ties on `by` pick any of the tied rows on both
    engines. -#}
{% macro ts_arg_max(col, by, where=none) -%}
    {{ return(adapter.dispatch('ts_arg_max', 'tradesentry')(col, by, where)) }}
{%- endmacro %}

{% macro default__ts_arg_max(col, by, where) -%}
    arg_max({{ col }}, {{ by }}){% if where %} filter (where {{ where }}){% endif %}
{%- endmacro %}

{% macro postgres__ts_arg_max(col, by, where) -%}
    (array_agg({{ col }} order by {{ by }} desc) filter (where {{ by }} is not null{% if where %} and ({{ where }}){% endif %}))[1]
{%- endmacro %}


{#- Statements that (re)create a table from a query (hooks; models use materializations). -#}
{% macro ts_create_or_replace_table_as(relation, sql) -%}
    {{ return(adapter.dispatch('ts_create_or_replace_table_as', 'tradesentry')(relation, sql)) }}
{%- endmacro %}

{% macro default__ts_create_or_replace_table_as(relation, sql) -%}
    create or replace table {{ relation }} as
        {{ sql }}
{%- endmacro %}

{% macro postgres__ts_create_or_replace_table_as(relation, sql) -%}
    drop table if exists {{ relation }};
    create table {{ relation }} as
        {{ sql }}
{%- endmacro %}
