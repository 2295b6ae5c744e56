{#- The metadata columns raw_load adds to every raw table, with their types. -#}
{% macro ts_raw_metadata_columns() -%}
    {{ return({
        '_feed': 'varchar',
        '_night': 'date',
        '_source_file': 'varchar',
        '_source_line': 'integer',
        '_file_sha256': 'varchar',
        '_arrived_at': 'timestamp',
    }) }}
{%- endmacro %}


{#- The relation of a raw source table, or an empty typed select with the spec's columns when the
    table does not exist yet (a feed that has never landed a file). -#}
{% macro ts_source_or_empty(source_name, table_name, file_columns) -%}
    {%- set rel = source(source_name, table_name) -%}
    {%- set existing = none -%}
    {%- if execute -%}
        {%- set existing = adapter.get_relation(database=rel.database, schema=rel.schema, identifier=rel.identifier) -%}
    {%- endif -%}
    {%- if existing is not none or not execute -%}
        {{ rel }}
    {%- else -%}
        (
            select
                {%- for c in file_columns %}
                cast(null as varchar) as {{ ts_ident(c) }},
                {%- endfor %}
                {%- for name, dtype in ts_raw_metadata_columns().items() %}
                cast(null as {{ dtype }}) as {{ name }}{{ "," if not loop.last }}
                {%- endfor %}
            where false
        )
    {%- endif -%}
{%- endmacro %}


{#- The file's own columns of a raw table as they are in the warehouse (header order), or the spec's
    columns when the table does not exist yet. -#}
{% macro ts_file_columns(source_name, table_name, file_columns) -%}
    {%- set rel = source(source_name, table_name) -%}
    {%- if not execute -%}
        {{ return(file_columns) }}
    {%- endif -%}
    {%- set existing = adapter.get_relation(database=rel.database, schema=rel.schema, identifier=rel.identifier) -%}
    {%- if existing is none -%}
        {{ return(file_columns) }}
    {%- endif -%}
    {%- set meta = ts_raw_metadata_columns() -%}
    {%- set names = [] -%}
    {%- for col in adapter.get_columns_in_relation(existing) -%}
        {%- if col.name not in meta -%}
            {%- do names.append(col.name) -%}
        {%- endif -%}
    {%- endfor -%}
    {{ return(names) }}
{%- endmacro %}


{#- raw_values: a JSON object of the raw table's own columns. -#}
{% macro ts_raw_values(source_name, table_name, file_columns) -%}
    {{ ts_json_object(ts_file_columns(source_name, table_name, file_columns)) }}
{%- endmacro %}


{#- A file column by name, or NULL when the raw table does not have it (yet): a column only an older
    or only the current layout of a feed has. -#}
{% macro ts_column_or_null(name, raw_columns) -%}
    {%- if name in raw_columns -%}
        {{ ts_ident(name) }}
    {%- else -%}
        cast(null as varchar)
    {%- endif -%}
{%- endmacro %}
