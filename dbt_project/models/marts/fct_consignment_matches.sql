{{ config(
    materialized='incremental',
    incremental_strategy='append',
    on_schema_change='fail',
    pre_hook="{{ ts_matches_prepare_incremental() }}"
) }}

-- depends_on: {{ ref('mart_dirty_keys') }}

-- Mirror matching: each export of a member country A to a member country B, matched to B's import
-- from A of the same consignment. First by the normalised transport reference (items of one
-- consignment paired by item number when both sides list the same items, else within the same
-- HS6, the rest in item order), then, for exports no reference
-- matched, by HS6 + country pair + net mass within a tolerance + import 0-30 days after the export.
-- Unmatched exports are `orphan` once older than transit_window_days at as_of_night, `pending`
-- before that. Incremental over a window: ts_matches_prepare_incremental (macros/incremental.sql)
-- says which exports a run rematches and against which imports.

{%- set tolerance = var('fallback_mass_tolerance', 0.05) | float %}
{%- set max_transit = var('fallback_max_transit_days', 30) | int %}
{%- set window = var('transit_window_days', 21) | int %}

with

declarations as (
    select * from {{ ref('fct_declarations') }}
),

members as (
    select country_code from {{ ref('dim_countries') }}
    where is_member
),

as_of as (
    select {{ ts_as_of_night_sql(ref('fct_declarations')) }} as as_of_night
),

exports as (
    select *
    from declarations
    where
        flow = 'export'
        and reporter_country in (select m.country_code from members as m)
        and partner_country in (select m.country_code from members as m)
    {%- if is_incremental() %}
        and declaration_key in (
            select s.declaration_key from {{ this.schema }}.fct_consignment_matches__scope as s
            where s.rematch_export
        )
        {%- endif %}
),

imports as (
    select *
    from declarations
    where
        flow = 'import'
        and reporter_country in (select m.country_code from members as m)
        and partner_country in (select m.country_code from members as m)
    {%- if is_incremental() %}
        and declaration_key in (
            select s.declaration_key from {{ this.schema }}.fct_consignment_matches__scope as s
            where s.flow = 'import'
        )
        -- imports matched to an export outside the rematch stay with it
        and declaration_key not in (
            select m.import_key from {{ this }} as m where m.import_key is not null
        )
        {%- endif %}
),

-- 1. By reference. When both sides of a consignment list the same item numbers (as many items,
-- each number once on each side: one invoice, one item list), items pair by number: a manipulated
-- mass or a changed code on one side then cannot shuffle the other items' pairs. Other
-- consignments pair their items first within the same HS6 (in mass order), then the items left
-- over (a code changed on one side: misclassification, an edition change) in item-number order,
-- so one misdeclared code does not shuffle the other items' pairs.
export_items as (
    select
        reporter_country,
        partner_country,
        consignment_ref_norm,
        count(*) as n_items,
        count(distinct item_no) as n_numbers
    from exports
    where consignment_ref_norm is not null
    group by reporter_country, partner_country, consignment_ref_norm
),

import_items as (
    select
        reporter_country,
        partner_country,
        consignment_ref_norm,
        count(*) as n_items,
        count(distinct item_no) as n_numbers
    from imports
    where consignment_ref_norm is not null
    group by reporter_country, partner_country, consignment_ref_norm
),

same_number_items as (
    select
        e.reporter_country,
        e.partner_country,
        e.consignment_ref_norm,
        count(*) as n_paired
    from exports as e
    inner join imports as i
        on
            e.reporter_country = i.partner_country
            and e.partner_country = i.reporter_country
            and e.consignment_ref_norm = i.consignment_ref_norm
            and e.item_no = i.item_no
    group by e.reporter_country, e.partner_country, e.consignment_ref_norm
),

-- consignments (exporter, importer, reference) whose two item lists correspond number by number
numbered as (
    select
        ei.reporter_country,
        ei.partner_country,
        ei.consignment_ref_norm
    from export_items as ei
    inner join import_items as ii
        on
            ei.reporter_country = ii.partner_country
            and ei.partner_country = ii.reporter_country
            and ei.consignment_ref_norm = ii.consignment_ref_norm
    inner join same_number_items as s
        on
            ei.reporter_country = s.reporter_country
            and ei.partner_country = s.partner_country
            and ei.consignment_ref_norm = s.consignment_ref_norm
    where
        ei.n_items = ii.n_items
        and ei.n_numbers = ei.n_items
        and ii.n_numbers = ii.n_items
        and s.n_paired = ei.n_items
),

item_no_pairs as (
    select
        e.declaration_key as export_key,
        i.declaration_key as import_key
    from exports as e
    inner join numbered as n
        on
            e.reporter_country = n.reporter_country
            and e.partner_country = n.partner_country
            and e.consignment_ref_norm = n.consignment_ref_norm
    inner join imports as i
        on
            e.reporter_country = i.partner_country
            and e.partner_country = i.reporter_country
            and e.consignment_ref_norm = i.consignment_ref_norm
            and e.item_no = i.item_no
),

exports_by_ref as (
    select
        e.declaration_key,
        e.reporter_country,
        e.partner_country,
        e.consignment_ref_norm,
        e.hs6,
        e.item_no,
        row_number() over (
            partition by e.reporter_country, e.partner_country, e.consignment_ref_norm, e.hs6
            order by e.net_mass_kg, e.item_no, e.declaration_key
        ) as hs_rank
    from exports as e
    left join numbered as n
        on
            e.reporter_country = n.reporter_country
            and e.partner_country = n.partner_country
            and e.consignment_ref_norm = n.consignment_ref_norm
    where e.consignment_ref_norm is not null and n.consignment_ref_norm is null
),

imports_by_ref as (
    select
        i.declaration_key,
        i.reporter_country,
        i.partner_country,
        i.consignment_ref_norm,
        i.hs6,
        i.item_no,
        row_number() over (
            partition by i.reporter_country, i.partner_country, i.consignment_ref_norm, i.hs6
            order by i.net_mass_kg, i.item_no, i.declaration_key
        ) as hs_rank
    from imports as i
    left join numbered as n
        on
            i.reporter_country = n.partner_country
            and i.partner_country = n.reporter_country
            and i.consignment_ref_norm = n.consignment_ref_norm
    where i.consignment_ref_norm is not null and n.consignment_ref_norm is null
),

same_hs_pairs as (
    select
        e.declaration_key as export_key,
        i.declaration_key as import_key
    from exports_by_ref as e
    inner join imports_by_ref as i
        on
            e.reporter_country = i.partner_country
            and e.partner_country = i.reporter_country
            and e.consignment_ref_norm = i.consignment_ref_norm
            and e.hs6 = i.hs6
            and e.hs_rank = i.hs_rank
),

exports_left as (
    select
        e.*,
        row_number() over (
            partition by e.reporter_country, e.partner_country, e.consignment_ref_norm
            order by e.item_no, e.declaration_key
        ) as item_rank
    from exports_by_ref as e
    where e.declaration_key not in (select p.export_key from same_hs_pairs as p)
),

imports_left as (
    select
        i.*,
        row_number() over (
            partition by i.reporter_country, i.partner_country, i.consignment_ref_norm
            order by i.item_no, i.declaration_key
        ) as item_rank
    from imports_by_ref as i
    where i.declaration_key not in (select p.import_key from same_hs_pairs as p)
),

reference_pairs as (
    select
        export_key,
        import_key,
        'reference' as match_method
    from item_no_pairs
    union all
    select
        export_key,
        import_key,
        'reference' as match_method
    from same_hs_pairs
    union all
    select
        e.declaration_key as export_key,
        i.declaration_key as import_key,
        'reference' as match_method
    from exports_left as e
    inner join imports_left as i
        on
            e.reporter_country = i.partner_country
            and e.partner_country = i.reporter_country
            and e.consignment_ref_norm = i.consignment_ref_norm
            and e.item_rank = i.item_rank
),

-- 2. Fallback for the rest: same HS6 and country pair, mass within tolerance, import 0-N days
-- after the export; each side keeps its closest candidate and only mutual choices pair up.
fallback_candidates as (
    select
        e.declaration_key as export_key,
        i.declaration_key as import_key,
        abs(i.net_mass_kg - e.net_mass_kg) / nullif(e.net_mass_kg, 0) as mass_gap,
        {{ ts_days_between('e.declaration_date', 'i.declaration_date') }} as transit_days
    from exports as e
    inner join imports as i
        on
            e.reporter_country = i.partner_country
            and e.partner_country = i.reporter_country
            and e.hs6 = i.hs6
            and e.declaration_date <= i.declaration_date
            and e.declaration_date + {{ max_transit }} >= i.declaration_date
            and abs(e.net_mass_kg - i.net_mass_kg) <= {{ tolerance }} * e.net_mass_kg
    where
        e.declaration_key not in (select r.export_key from reference_pairs as r)
        and i.declaration_key not in (select r.import_key from reference_pairs as r)
),

fallback_ranked as (
    select
        export_key,
        import_key,
        row_number() over (
            partition by export_key order by mass_gap, transit_days, import_key
        ) as export_choice,
        row_number() over (
            partition by import_key order by mass_gap, transit_days, export_key
        ) as import_choice
    from fallback_candidates
),

fallback_pairs as (
    select
        export_key,
        import_key,
        'fallback' as match_method
    from fallback_ranked
    where export_choice = 1 and import_choice = 1
),

pairs as (
    select * from reference_pairs
    union all
    select * from fallback_pairs
)

select
    e.consignment_ref_norm,
    e.declaration_key as export_key,
    i.declaration_key as import_key,
    e.reporter_country as exporter_country,
    e.partner_country as importer_country,
    p.match_method,
    case
        when i.declaration_key is not null then 'matched'
        when {{ ts_days_between('e.declaration_date', 'as_of.as_of_night') }} > {{ window }} then 'orphan'
        else 'pending'
    end as status,
    e.night as export_night,
    i.night as import_night,
    e.hs6 as export_hs6,
    i.hs6 as import_hs6,
    case when i.declaration_key is not null then e.hs6 <> i.hs6 end as hs_mismatch,
    i.statistical_value_usd / nullif(e.statistical_value_usd, 0) as value_ratio,
    i.net_mass_kg / nullif(e.net_mass_kg, 0) as mass_ratio,
    {{ ts_days_between('e.declaration_date', 'i.declaration_date') }} as transit_days,
    e.statistical_value_usd as export_value_usd,
    i.statistical_value_usd as import_value_usd
from exports as e
cross join as_of
left join pairs as p
    on e.declaration_key = p.export_key
left join imports as i
    on p.import_key = i.declaration_key
