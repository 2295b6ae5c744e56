{#- Generic tests the project needs (no dbt_utils offline). -#}

{#- Values within [min_value, max_value] (either bound optional); NULLs pass. -#}
{% test accepted_range(model, column_name, min_value=none, max_value=none, inclusive=true) %}
select *
from {{ model }}
where
    {{ column_name }} is not null
    and (
        false
        {%- if min_value is not none %}
        or {{ column_name }} {{ '<' if inclusive else '<=' }} {{ min_value }}
        {%- endif %}
        {%- if max_value is not none %}
        or {{ column_name }} {{ '>' if inclusive else '>=' }} {{ max_value }}
        {%- endif %}
    )
{% endtest %}


{#- The combination of columns is unique. -#}
{% test unique_combination_of_columns(model, combination_of_columns) %}
select
    {{ combination_of_columns | join(', ') }},
    count(*) as n_rows
from {{ model }}
group by {{ combination_of_columns | join(', ') }}
having count(*) > 1
{% endtest %}


{#- Every (col1, col2, ...) of the model exists as (to_col1, to_col2, ...) in `to`. -#}
{% test relationships_composite(model, columns, to, to_columns) %}
select child.*
from {{ model }} as child
where
    {% for c in columns %}child.{{ c }} is not null{{ ' and ' if not loop.last }}{% endfor %}
    and not exists (
        select 1 from {{ to }} as parent
        where
            {% for i in range(columns | length) -%}
            parent.{{ to_columns[i] }} = child.{{ columns[i] }}{{ ' and ' if not loop.last }}
            {%- endfor %}
    )
{% endtest %}


{#- A boolean expression holds on every row. -#}
{% test expression_is_true(model, expression, column_name=none) %}
select *
from {{ model }}
where not ({{ expression }})
{% endtest %}
