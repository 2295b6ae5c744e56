-- One rate per (currency, rate_date) in US dollars per unit: when a rate was published again, the
-- later night wins, then the later arrival, then the later line.

with

rates as (
    select * from {{ ref('int_exchange_rates_unioned') }}
    where
        rate_date is not null
        and currency is not null
        and usd_per_unit > 0
),

ranked as (
    select
        *,
        row_number() over (
            partition by currency, rate_date
            order by night desc, arrived_at desc, source_file desc, source_line desc
        ) as version_rank
    from rates
)

select
    currency,
    rate_date,
    usd_per_unit,
    rate,
    rate_quote,
    feed,
    night,
    source_file,
    source_line
from ranked
where version_rank = 1
