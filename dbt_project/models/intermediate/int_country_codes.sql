-- Every way a country can be written (alpha-2, alpha-3, numeric) mapped to its alpha-2 code.
-- code_kind 'any' accepts all three forms: used for codes a feed's value_maps.country produced.

with

countries as (
    select * from {{ ref('countries') }}
),

by_kind as (
    select
        alpha2 as code,
        'alpha2' as code_kind,
        alpha2
    from countries
    union all
    select
        alpha3 as code,
        'alpha3' as code_kind,
        alpha2
    from countries
    union all
    select
        numeric_code as code,
        'numeric' as code_kind,
        alpha2
    from countries
)

select
    code,
    code_kind,
    alpha2
from by_kind
union all
select
    code,
    'any' as code_kind,
    alpha2
from by_kind
