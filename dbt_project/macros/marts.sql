{#- The columns of fct_declarations (docs/architecture.md), in order. -#}
{% macro ts_declaration_columns() -%}
    {{ return([
        'declaration_key', 'reporter_country', 'declaration_id', 'item_no', 'feed', 'night',
        'declaration_date', 'flow', 'hs_code_declared', 'hs_edition', 'hs6', 'hs4', 'hs2',
        'partner_country', 'origin_country', 'trader_id', 'trader_name', 'declarant_id',
        'customs_office', 'quantity', 'quantity_unit', 'net_mass_original', 'mass_unit',
        'net_mass_kg', 'customs_value_original', 'currency_code', 'fx_usd_per_unit', 'fx_rate_date',
        'customs_value_usd', 'valuation_basis', 'statistical_value_usd', 'unit_value_usd_per_kg',
        'consignment_ref', 'consignment_ref_norm', 'goods_description', 'source_file',
        'source_line', 'arrived_at', 'raw_values',
    ]) }}
{%- endmacro %}

{% macro ts_select_declaration_columns(alias) -%}
    {%- for c in ts_declaration_columns() %}
    {{ alias }}.{{ c }}{{ "," if not loop.last }}
    {%- endfor %}
{%- endmacro %}
