-- Harmonised declarations: ISO alpha-2 countries, HS6 in the target edition, US dollars, kilograms,
-- FOB-basis statistical value. Every row gets row_status ok / quarantine / held with a
-- machine-readable reason_code and a reason in plain words naming the column and its raw value.

{%- set target_edition = var('target_hs_edition', 'HS2022') %}
{%- set max_rate_age = var('max_rate_age_days', 7) | int %}
{%- set cif_fob = var('cif_fob_factor', 1.06) | float %}

{{ config(
    materialized='incremental',
    incremental_strategy='append',
    on_schema_change='fail',
    pre_hook="{{ ts_converted_prepare_incremental() }}"
) }}

-- Incremental by night (macros/incremental.sql): a night's rows depend only on that night's landed
-- rows, its holds and quality failures and the exchange rates, so a nightly build converts the
-- nights that changed (tonight's, as a rule) instead of the whole history; the pre-hook deletes
-- those nights first. `dbt build --full-refresh` rebuilds everything and gives the same rows.

with

declarations as (
    select * from {{ ref('int_declarations_unioned') }}
    {%- if is_incremental() %}
    where night in (select d.night from {{ this.schema }}.int_declarations_converted__dirty as d)
    {%- endif %}
),

country_codes as (
    select * from {{ ref('int_country_codes') }}
),

currencies as (
    select currency_code from {{ ref('currencies') }}
),

mass_units as (
    select
        mass_unit,
        kg_per_unit
    from {{ ref('mass_units') }}
),

hs_products as (
    select distinct hs6
    from {{ ref('hs_products') }}
    where hs_edition = '{{ target_edition }}'
),

concordance as (
    -- A code split between editions maps to its lowest successor (deterministic).
    select
        from_edition,
        from_hs6,
        min(to_hs6) as to_hs6
    from {{ ref('hs_concordance') }}
    where to_edition = '{{ target_edition }}'
    group by from_edition, from_hs6
),

rates as (
    select * from {{ ref('int_exchange_rates') }}
),

hs_parsed as (
    select
        declarations.*,
        case
            when length(declarations.hs_digits) in (6, 8, 10)
                then left(declarations.hs_digits, 6)
        end as hs6_declared,
        case
            when declarations.partner_country_code_kind = 'numeric'
                then lpad(declarations.partner_country, 3, '0')
            else declarations.partner_country
        end as partner_country_lookup,
        case
            when declarations.origin_country_code_kind = 'numeric'
                then lpad(declarations.origin_country, 3, '0')
            else declarations.origin_country
        end as origin_country_lookup
    from declarations
),

looked_up as (
    select
        d.*,
        partner.alpha2 as partner_alpha2,
        origin.alpha2 as origin_alpha2,
        case
            when d.hs_edition = '{{ target_edition }}' then d.hs6_declared
            else coalesce(concordance.to_hs6, d.hs6_declared)
        end as hs6_target,
        mass_units.kg_per_unit,
        currencies.currency_code as currency_known
    from hs_parsed as d
    left join country_codes as partner
        on
            d.partner_country_lookup = partner.code
            and d.partner_country_code_kind = partner.code_kind
    left join country_codes as origin
        on
            d.origin_country_lookup = origin.code
            and d.origin_country_code_kind = origin.code_kind
    left join concordance
        on
            d.hs_edition = concordance.from_edition
            and d.hs6_declared = concordance.from_hs6
    left join mass_units
        on d.mass_unit = mass_units.mass_unit
    left join currencies
        on d.currency = currencies.currency_code
),

rate_age_offsets as (
    {%- for k in range(max_rate_age + 1) %}
        select {{ k }} as days_after{{ " union all" if not loop.last }}
    {%- endfor %}
),

rates_by_day as (
    -- For every day a declaration may carry: the rate of that day, or the latest earlier one within
    -- max_rate_age_days. Built from the rates (a few thousand rows) so that declarations meet it by
    -- an equality join; a range join of the declarations with the rates ranked up to
    -- max_rate_age_days + 1 candidates per row (millions of window rows on a big night).
    select
        rates.currency,
        rates.rate_date + offsets.days_after as rate_day,
        rates.rate_date,
        rates.usd_per_unit,
        row_number() over (
            partition by rates.currency, rates.rate_date + offsets.days_after
            order by rates.rate_date desc
        ) as rate_rank
    from rates
    cross join rate_age_offsets as offsets
),

with_rates as (
    select
        d.*,
        (hs_products.hs6 is not null) as hs6_known,
        case
            when d.currency = 'USD' then 1.0
            else r.usd_per_unit
        end as fx_usd_per_unit,
        case
            when d.currency = 'USD' then d.declaration_date
            else r.rate_date
        end as fx_rate_date
    from looked_up as d
    left join hs_products
        on d.hs6_target = hs_products.hs6
    left join rates_by_day as r
        on
            d.currency = r.currency
            and d.declaration_date = r.rate_day
            and r.rate_rank = 1
),

{%- set checks = [
    ["declaration_id is null", "missing_value",
        "'declaration_id is empty'"],
    ["item_no is null", "invalid_item_no",
        "'item_no ' || " ~ ts_quote_value('item_no_raw') ~ " || ' is not a whole number'"],
    ["declaration_date_raw is null or trim(declaration_date_raw) = ''", "missing_value",
        "'declaration_date is empty'"],
    ["declaration_date is null", "unparseable_date",
        "'declaration_date ' || " ~ ts_quote_value('declaration_date_raw') ~ " || ' is not a date in the format ''' || format_date || ''''"],
    ["flow is null", "unknown_flow",
        "'flow ' || " ~ ts_quote_value('flow_raw') ~ " || ' is not a flow code this feed maps to import or export'"],
    ["hs_digits is null", "missing_value",
        "'hs_code ' || " ~ ts_quote_value('hs_code_raw') ~ " || ' has no digits'"],
    ["hs6_declared is null", "invalid_hs_code",
        "'hs_code ' || " ~ ts_quote_value('hs_code_raw') ~ " || ' has ' || length(hs_digits) || ' digits, not 6, 8 or 10'"],
    ["not hs6_known", "unknown_hs_code",
        "'hs_code ' || " ~ ts_quote_value('hs_code_raw') ~ " || ' (' || hs_edition || ' ' || hs6_declared || ', " ~ target_edition ~ " ' || hs6_target || ') is not in the " ~ target_edition ~ " nomenclature'"],
    ["partner_country is null", "missing_value",
        "'partner_country is empty'"],
    ["partner_alpha2 is null", "unknown_country",
        "'partner_country ' || " ~ ts_quote_value('partner_country_raw') ~ " || ' is not a known ' || partner_country_code_kind || ' country code'"],
    ["origin_country is not null and origin_alpha2 is null", "unknown_country",
        "'origin_country ' || " ~ ts_quote_value('origin_country_raw') ~ " || ' is not a known ' || origin_country_code_kind || ' country code'"],
    ["net_mass_raw is null or trim(net_mass_raw) = ''", "missing_value",
        "'net_mass is empty'"],
    ["net_mass is null", "unparseable_number",
        "'net_mass ' || " ~ ts_quote_value('net_mass_raw') ~ " || ' is not a number with decimal ''' || format_decimal || ''''"],
    ["quantity is null and quantity_raw is not null and trim(quantity_raw) <> ''", "unparseable_number",
        "'quantity ' || " ~ ts_quote_value('quantity_raw') ~ " || ' is not a number with decimal ''' || format_decimal || ''''"],
    ["mass_unit is null", "missing_value",
        "'mass_unit is empty'"],
    ["kg_per_unit is null", "unknown_mass_unit",
        "'mass_unit ' || " ~ ts_quote_value('mass_unit') ~ " || ' is not a known mass unit (kg, g, t, lb)'"],
    ["customs_value_raw is null or trim(customs_value_raw) = ''", "missing_value",
        "'customs_value is empty'"],
    ["customs_value is null", "unparseable_number",
        "'customs_value ' || " ~ ts_quote_value('customs_value_raw') ~ " || ' is not a number with decimal ''' || format_decimal || ''''"],
    ["currency is null", "missing_value",
        "'currency is empty'"],
    ["currency_known is null", "unknown_currency",
        "'currency ' || " ~ ts_quote_value('currency') ~ " || ' is not an ISO 4217 currency code'"],
    ["valuation_basis is null", "missing_value",
        "'valuation_basis is empty'"],
    ["valuation_basis not in ('CIF', 'FOB')", "invalid_valuation_basis",
        "'valuation_basis ' || " ~ ts_quote_value('valuation_basis') ~ " || ' is not CIF or FOB'"],
    ["fx_usd_per_unit is null", "rate_missing",
        "'no ' || currency || ' exchange rate on ' || cast(declaration_date as varchar) || ' or up to " ~ max_rate_age ~ " days before'"],
] %}

checked as (
    select
        *,
        {{ ts_first_failure_code(checks) }} as reason_code,
        {{ ts_first_failure_reason(checks) }} as reason
    from with_rates
),

converted as (
    select
        *,
        case
            when reason_code is null then 'ok'
            when reason_code = 'rate_missing' then 'held'
            else 'quarantine'
        end as row_status,
        customs_value * fx_usd_per_unit as customs_value_usd_calc,
        net_mass * kg_per_unit as net_mass_kg_calc
    from checked
)

select
    feed,
    night,
    source_file,
    source_line,
    file_sha256,
    arrived_at,
    row_status,
    reason_code,
    reason,
    case
        when declaration_id is not null and item_no is not null
            then reporter_country || '|' || declaration_id || '|' || cast(item_no as varchar)
    end as declaration_key,
    reporter_country,
    declaration_id,
    item_no,
    declaration_date,
    flow,
    hs_code as hs_code_declared,
    hs_edition,
    hs_format,
    hs6_target as hs6,
    left(hs6_target, 4) as hs4,
    left(hs6_target, 2) as hs2,
    partner_alpha2 as partner_country,
    coalesce(origin_alpha2, 'ZZ') as origin_country,
    coalesce(trader_id, '__unknown__') as trader_id,
    trader_name,
    declarant_id,
    customs_office,
    quantity,
    quantity_unit,
    net_mass as net_mass_original,
    mass_unit,
    net_mass_kg_calc as net_mass_kg,
    customs_value as customs_value_original,
    currency as currency_code,
    fx_usd_per_unit,
    fx_rate_date,
    customs_value_usd_calc as customs_value_usd,
    valuation_basis,
    case
        when valuation_basis = 'CIF' then customs_value_usd_calc / {{ cif_fob }}
        else customs_value_usd_calc
    end as statistical_value_usd,
    case
        when net_mass_kg_calc > 0
            then
                (case
                    when valuation_basis = 'CIF' then customs_value_usd_calc / {{ cif_fob }}
                    else customs_value_usd_calc
                end) / net_mass_kg_calc
    end as unit_value_usd_per_kg,
    consignment_ref,
    {{ ts_alnum_upper('consignment_ref') }} as consignment_ref_norm,
    goods_description,
    raw_values
from converted
