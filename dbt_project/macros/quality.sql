{#- Which ops.quality_row_failures rows quarantine their row: all of them. The quality gates write
    a row there only for a failing row-level expectation, whose failing rows are quarantined
    whatever its severity (tradesentry/quality/suites.py): `warning` quarantines the rows and lets
    the feed go on, `critical` also holds the feed (the rows stay held until the hold is lifted,
    then are quarantined). `severity` is kept in the table for reports, not for routing. -#}
{% macro ts_quarantining_failure(alias=none) -%}
    true
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
