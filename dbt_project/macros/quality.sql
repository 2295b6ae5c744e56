{#- Which ops.quality_row_failures rows quarantine their row: everything but warnings. -#}
{% macro ts_quarantining_failure(alias=none) -%}
    {%- set p = alias ~ '.' if alias else '' -%}
    coalesce(lower({{ p }}severity), 'critical') <> 'warning'
{%- endmacro %}


{#- The first failing check of an ordered list, as two CASE expressions (code, reason).
    checks: list of [condition_sql, reason_code, reason_sql]. -#}
{% macro ts_first_failure_code(checks) -%}
    case
        {%- for c in checks %}
        when {{ c[0] }} then '{{ c[1] }}'
        {%- endfor %}
    end
{%- endmacro %}

{% macro ts_first_failure_reason(checks) -%}
    case
        {%- for c in checks %}
        when {{ c[0] }} then {{ c[2] }}
        {%- endfor %}
    end
{%- endmacro %}


{#- 'text' quoted for a reason message: the value in single quotes, or (empty). -#}
{% macro ts_quote_value(col) -%}
    coalesce('''' || {{ col }} || '''', '(empty)')
{%- endmacro %}
