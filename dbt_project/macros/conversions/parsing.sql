{#- Engine-specific parsing behind dispatched macros: add a postgres__ version beside each default__
    one to port the project. Every macro returns NULL where the input cannot be parsed (never errors). -#}

{#- Trimmed text, NULL when empty. -#}
{% macro ts_clean(col) -%}
    {{ return(adapter.dispatch('ts_clean', 'tradesentry')(col)) }}
{%- endmacro %}

{% macro default__ts_clean(col) -%}
    nullif(trim({{ col }}), '')
{%- endmacro %}


{#- A number written with the given decimal and thousands separators, as a double; NULL when the
    text is not exactly such a number (so '1.234,5' with decimal '.' is NULL, not 1.234). -#}
{% macro ts_try_number(col, decimal='.', thousands='') -%}
    {{ return(adapter.dispatch('ts_try_number', 'tradesentry')(col, decimal, thousands)) }}
{%- endmacro %}

{% macro default__ts_try_number(col, decimal, thousands) -%}
    {%- set txt -%}
        {%- if thousands -%}replace(trim({{ col }}), '{{ thousands }}', ''){%- else -%}trim({{ col }}){%- endif -%}
    {%- endset -%}
    {%- set normalised -%}
        {%- if decimal == ',' -%}replace({{ txt }}, ',', '.'){%- else -%}{{ txt }}{%- endif -%}
    {%- endset -%}
    case
        when regexp_full_match({{ normalised }}, '[+-]?([0-9]+([.][0-9]*)?|[.][0-9]+)')
            then try_cast({{ normalised }} as double)
    end
{%- endmacro %}


{#- A whole number (item numbers); NULL unless the text is digits only. -#}
{% macro ts_try_integer(col) -%}
    {{ return(adapter.dispatch('ts_try_integer', 'tradesentry')(col)) }}
{%- endmacro %}

{% macro default__ts_try_integer(col) -%}
    case when regexp_full_match(trim({{ col }}), '[0-9]{1,9}') then cast(trim({{ col }}) as integer) end
{%- endmacro %}


{#- A date in the given strftime format; NULL when it does not parse. -#}
{% macro ts_try_date(col, format='%Y-%m-%d') -%}
    {{ return(adapter.dispatch('ts_try_date', 'tradesentry')(col, format)) }}
{%- endmacro %}

{% macro default__ts_try_date(col, format) -%}
    cast(try_strptime(trim({{ col }}), '{{ format }}') as date)
{%- endmacro %}


{#- The digits of a tariff code ('8471.30.00' -> '84713000'); NULL when there are none. -#}
{% macro ts_hs_digits(col) -%}
    {{ return(adapter.dispatch('ts_hs_digits', 'tradesentry')(col)) }}
{%- endmacro %}

{% macro default__ts_hs_digits(col) -%}
    nullif(regexp_replace(coalesce({{ col }}, ''), '[^0-9]', '', 'g'), '')
{%- endmacro %}


{#- Upper case, letters and digits only: consignment references compared across countries. -#}
{% macro ts_alnum_upper(col) -%}
    {{ return(adapter.dispatch('ts_alnum_upper', 'tradesentry')(col)) }}
{%- endmacro %}

{% macro default__ts_alnum_upper(col) -%}
    nullif(regexp_replace(upper(coalesce({{ col }}, '')), '[^A-Z0-9]', '', 'g'), '')
{%- endmacro %}


{#- Whole days from d1 to d2 (d2 - d1). -#}
{% macro ts_days_between(d1, d2) -%}
    {{ return(adapter.dispatch('ts_days_between', 'tradesentry')(d1, d2)) }}
{%- endmacro %}

{% macro default__ts_days_between(d1, d2) -%}
    date_diff('day', {{ d1 }}, {{ d2 }})
{%- endmacro %}


{#- A SQL string literal, quotes escaped. -#}
{% macro ts_literal(value) -%}
    {%- if value is none -%}cast(null as varchar){%- else -%}'{{ value | replace("'", "''") }}'{%- endif -%}
{%- endmacro %}


{#- A quoted identifier, embedded quotes doubled. -#}
{% macro ts_ident(name) -%}
    "{{ name | replace('"', '""') }}"
{%- endmacro %}


{#- A JSON object of the given columns, keyed by their names. -#}
{% macro ts_json_object(columns) -%}
    {{ return(adapter.dispatch('ts_json_object', 'tradesentry')(columns)) }}
{%- endmacro %}

{% macro default__ts_json_object(columns) -%}
    {%- if columns | length == 0 -%}
        json_object()
    {%- else -%}
        json_object(
            {%- for c in columns %}
            {{ ts_literal(c) }}, {{ ts_ident(c) }}{{ "," if not loop.last }}
            {%- endfor %}
        )
    {%- endif -%}
{%- endmacro %}


{#- A DATE literal from a 'YYYY-MM-DD' string, or a NULL date. -#}
{% macro ts_date_literal(value) -%}
    {%- if value -%}cast('{{ value | string | replace("'", "''") }}' as date){%- else -%}cast(null as date){%- endif -%}
{%- endmacro %}
