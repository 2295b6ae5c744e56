{#- Custom schemas are used as they are (staging, intermediate, marts, seeds), not prefixed with the
    target schema: the pipeline and the published snapshot name them literally. -#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {%- if custom_schema_name is none -%}
        {{ target.schema | trim }}
    {%- else -%}
        {{ custom_schema_name | trim }}
    {%- endif -%}
{%- endmacro %}
