-- Traders per reporting country (trader ids are national), from the current declarations, with the
-- unknown member __unknown__ for every member country and ZZ.

with

declarations as (
    select * from {{ ref('fct_declarations') }}
),

known as (
    select
        reporter_country,
        trader_id,
        max(trader_name) filter (where trader_name is not null) as any_name,
        {{ ts_arg_max('trader_name', 'night', 'trader_name is not null') }} as latest_name,
        min(night) as first_night,
        max(night) as last_night,
        count(*) as declarations
    from declarations
    group by reporter_country, trader_id
),

unknown as (
    select
        country_code as reporter_country,
        '__unknown__' as trader_id
    from {{ ref('dim_countries') }}
    where is_member or country_code = 'ZZ'
)

select
    reporter_country || '|' || trader_id as trader_key,
    reporter_country,
    trader_id,
    coalesce(latest_name, any_name) as trader_name,
    first_night,
    last_night,
    declarations
from known
where trader_id <> '__unknown__' or reporter_country not in (select u.reporter_country from unknown as u)

union all

select
    unknown.reporter_country || '|' || unknown.trader_id as trader_key,
    unknown.reporter_country,
    unknown.trader_id,
    'Unknown trader' as trader_name,
    known.first_night,
    known.last_night,
    coalesce(known.declarations, 0) as declarations
from unknown
left join known
    on unknown.reporter_country = known.reporter_country and unknown.trader_id = known.trader_id
