-- HS6 products of the target edition, plus the unknown member 000000.

select
    hs6,
    left(hs6, 4) as hs4,
    left(hs6, 2) as hs2,
    hs_edition,
    description,
    section
from {{ ref('hs_products') }}
where hs_edition = '{{ var("target_hs_edition", "HS2022") }}'

union all

select
    '000000' as hs6,
    '0000' as hs4,
    '00' as hs2,
    '{{ var("target_hs_edition", "HS2022") }}' as hs_edition,
    'Unknown product' as description,
    'Unknown' as section
