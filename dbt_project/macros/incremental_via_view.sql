{#- Incremental builds on DuckDB without the staging copy.

    dbt-duckdb's incremental materialization first writes the new rows into a temporary table, then
    copies them into the target (`insert into target select * from temp`). For the nightly models
    that is the night's rows written twice, and held in DuckDB's temporary storage in between: on a
    5M-row night, 36 s for each of the two statements of int_declarations_converted under a 4GB
    memory cap (benchmarks/pipeline.md). With `ts_incremental_via_view: true` in a model's meta (dbt_project.yml sets it for all),
    the temporary relation is a view of the model's SQL instead: dbt still reads its columns to check
    on_schema_change, and the strategy's `insert into target ... select ... from <view>` computes
    the rows once, straight into the target. Only the incremental path of SQL models is affected
    (the temporary relation is created nowhere else for these models); a first build or
    --full-refresh creates the table as before. PostgreSQL (tier 3) keeps its adapter's behaviour. -#}
{% macro duckdb__create_table_as(temporary, relation, compiled_code, language='sql', partitioned_by=none, sorted_by=none) -%}
    {%- if temporary and language == 'sql' and (config.get('meta') or {}).get('ts_incremental_via_view', false) -%}
        create or replace temporary view {{ relation.include(database=false, schema=false) }} as (
            {{ compiled_code }}
        )
    {%- else -%}
        {{ return(dbt.duckdb__create_table_as(temporary, relation, compiled_code, language, partitioned_by, sorted_by)) }}
    {%- endif -%}
{%- endmacro %}
