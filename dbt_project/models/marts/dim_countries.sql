-- Countries: ISO 3166-1 codes, the programme's user-assigned member codes (XA-XZ, synthetic) and
-- the unknown member ZZ.

select
    alpha2 as country_code,
    alpha3,
    numeric_code,
    name,
    membership,
    is_member,
    (alpha2 like 'X%' or alpha2 = 'ZZ') as is_user_assigned
from {{ ref('countries') }}
