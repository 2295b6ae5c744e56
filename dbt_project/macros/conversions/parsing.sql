{#- Engine-specific parsing behind dispatched macros: default__ is DuckDB's SQL, postgres__ the same
    result on PostgreSQL (tests/test_tier3_dbt_postgres.py builds both and compares the marts). Every
    macro returns NULL where the input cannot be parsed (never errors). -#}

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

{#- The text of a number with the thousands separator taken out and '.' as the decimal mark
    (the same SQL on both engines). -#}
{% macro ts_number_text(col, decimal, thousands) -%}
    {%- set txt -%}
        {%- if thousands -%}replace(trim({{ col }}), '{{ thousands }}', ''){%- else -%}trim({{ col }}){%- endif -%}
    {%- endset -%}
    {%- if decimal == ',' -%}replace({{ txt }}, ',', '.'){%- else -%}{{ txt }}{%- endif -%}
{%- endmacro %}

{#- What ts_number_text must match in full to be a number. -#}
{% macro ts_number_pattern() -%}
    [+-]?([0-9]+([.][0-9]*)?|[.][0-9]+)
{%- endmacro %}

{% macro default__ts_try_number(col, decimal, thousands) -%}
    {%- set normalised = ts_number_text(col, decimal, thousands) -%}
    case
        when regexp_full_match({{ normalised }}, '{{ ts_number_pattern() }}')
            then try_cast({{ normalised }} as double)
    end
{%- endmacro %}

{#- No try_cast on PostgreSQL: the pattern guarantees the cast succeeds, except past double's range
    (over 300 digits: NULL here where DuckDB gives inf). -#}
{% macro postgres__ts_try_number(col, decimal, thousands) -%}
    {%- set normalised = ts_number_text(col, decimal, thousands) -%}
    case
        when {{ normalised }} ~ '^{{ ts_number_pattern() }}$' and length({{ normalised }}) <= 300
            then cast({{ normalised }} as double precision)
    end
{%- endmacro %}


{#- A whole number (item numbers); NULL unless the text is digits only. -#}
{% macro ts_try_integer(col) -%}
    {{ return(adapter.dispatch('ts_try_integer', 'tradesentry')(col)) }}
{%- endmacro %}

{% macro default__ts_try_integer(col) -%}
    case when regexp_full_match(trim({{ col }}), '[0-9]{1,9}') then cast(trim({{ col }}) as integer) end
{%- endmacro %}

{% macro postgres__ts_try_integer(col) -%}
    case when trim({{ col }}) ~ '^[0-9]{1,9}$' then cast(trim({{ col }}) as integer) end
{%- endmacro %}


{#- A date in the given strftime format; NULL when it does not parse. -#}
{% macro ts_try_date(col, format='%Y-%m-%d') -%}
    {{ return(adapter.dispatch('ts_try_date', 'tradesentry')(col, format)) }}
{%- endmacro %}

{% macro default__ts_try_date(col, format) -%}
    cast(try_strptime(trim({{ col }}), '{{ format }}') as date)
{%- endmacro %}

{#- PostgreSQL's to_date is lenient and raises on impossible dates, so the format becomes a regular
    expression that accepts what DuckDB's strptime accepts (%Y 1-4 digits, %m and %d 1-2; a field
    followed directly by another takes all its digits, as DuckDB reads greedily), and the day is
    checked against the month before make_date. Formats: %Y, %m, %d, %% and literal characters.
    Year 0 is NULL here (DuckDB gives 1 BC). -#}
{% macro postgres__ts_try_date(col, format) -%}
    {%- set spec = ts_strptime_regex(format) -%}
    {%- set txt = 'trim(' ~ col ~ ')' -%}
    {%- set part -%}(regexp_match({{ txt }}, '{{ spec.regex }}')){%- endset -%}
    {%- set y = 'cast(' ~ part ~ '[' ~ spec.groups['Y'] ~ '] as integer)' -%}
    {%- set m = 'cast(' ~ part ~ '[' ~ spec.groups['m'] ~ '] as integer)' -%}
    {%- set d = 'cast(' ~ part ~ '[' ~ spec.groups['d'] ~ '] as integer)' -%}
    case
        when {{ txt }} ~ '{{ spec.regex }}'
            then case
                when {{ y }} >= 1 and {{ m }} between 1 and 12
                    then case
                        when {{ d }} between 1 and extract(day from make_date({{ y }}, {{ m }}, 1) + interval '1 month - 1 day')
                            then make_date({{ y }}, {{ m }}, {{ d }})
                    end
            end
    end
{%- endmacro %}

{#- A strptime format as an anchored POSIX regular expression with one group per field:
    {'regex': ..., 'groups': {'Y': 1, 'm': 2, 'd': 3}}. -#}
{% macro ts_strptime_regex(format) -%}
    {%- set widths = {'Y': 4, 'm': 2, 'd': 2} -%}
    {%- set tokens = [] -%}
    {%- set ns = namespace(i=0, pct=false) -%}
    {%- for ch in format -%}
        {%- if ns.pct -%}
            {%- if ch in widths -%}
                {%- do tokens.append(('field', ch)) -%}
            {%- elif ch == '%' -%}
                {%- do tokens.append(('literal', '%')) -%}
            {%- else -%}
                {{ exceptions.raise_compiler_error("ts_try_date on " ~ target.type ~ ": format " ~ format ~ " uses %" ~ ch ~ "; supported: %Y %m %d %%") }}
            {%- endif -%}
            {%- set ns.pct = false -%}
        {%- elif ch == '%' -%}
            {%- set ns.pct = true -%}
        {%- else -%}
            {%- do tokens.append(('literal', ch)) -%}
        {%- endif -%}
    {%- endfor -%}
    {%- set groups = {} -%}
    {%- set ns.regex = '^' -%}
    {%- for kind, value in tokens -%}
        {%- if kind == 'field' -%}
            {%- set ns.i = ns.i + 1 -%}
            {%- do groups.update({value: ns.i}) -%}
            {%- set next_is_field = not loop.last and tokens[loop.index0 + 1][0] == 'field' -%}
            {%- if next_is_field -%}
                {%- set ns.regex = ns.regex ~ '([0-9]{' ~ widths[value] ~ '})' -%}
            {%- else -%}
                {%- set ns.regex = ns.regex ~ '([0-9]{1,' ~ widths[value] ~ '})' -%}
            {%- endif -%}
        {%- elif value.isalnum() -%}
            {%- set ns.regex = ns.regex ~ value -%}
        {%- elif value == "'" -%}
            {%- set ns.regex = ns.regex ~ "''" -%}
        {%- else -%}
            {%- set ns.regex = ns.regex ~ '[' ~ value ~ ']' -%}
        {%- endif -%}
    {%- endfor -%}
    {%- if groups | length != 3 -%}
        {{ exceptions.raise_compiler_error("ts_try_date on " ~ target.type ~ ": format " ~ format ~ " needs %Y, %m and %d") }}
    {%- endif -%}
    {{ return({'regex': ns.regex ~ '$', 'groups': groups}) }}
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

{% macro postgres__ts_days_between(d1, d2) -%}
    cast(cast({{ d2 }} as date) - cast({{ d1 }} as date) as bigint)
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

{#- json_object(keys[], values[]) takes any number of columns (json_build_object stops at 50); the
    text differs from DuckDB's in spacing only ({"a" : "x"} against {"a":"x"}). -#}
{% macro postgres__ts_json_object(columns) -%}
    {%- if columns | length == 0 -%}
        json_build_object()
    {%- else -%}
        json_object(
            array[
                {%- for c in columns %}
                {{ ts_literal(c) }}{{ "," if not loop.last }}
                {%- endfor %}
            ]::text[],
            array[
                {%- for c in columns %}
                cast({{ ts_ident(c) }} as text){{ "," if not loop.last }}
                {%- endfor %}
            ]
        )
    {%- endif -%}
{%- endmacro %}


{#- A DATE literal from a 'YYYY-MM-DD' string, or a NULL date. -#}
{% macro ts_date_literal(value) -%}
    {%- if value -%}cast('{{ value | string | replace("'", "''") }}' as date){%- else -%}cast(null as date){%- endif -%}
{%- endmacro %}
