{#- Incremental int_declarations_converted: the nights to (re)build, written to a small table by the
    model's pre-hook (before its delete), so that the delete and the insert use the same set.

    A night is rebuilt when
    1. it has a landed declarations file with no row in the model yet: new nights, resends, nights
       whose hold was lifted (their rows were left out while held);
    2. it has rows held for a missing exchange rate (the rate may have arrived);
    3. an exchange-rates file landed since the model's latest row: every night from the earliest
       rate date in it on (a rate can only serve declarations dated on or after it);
    4. it has rows in the model that the run now leaves out: an active feed hold or a quality
       failure placed after it was harmonised.
    A full refresh (`dbt build --full-refresh`, or the first build) gives the same rows. -#}
{% macro ts_converted_dirty_nights_sql() -%}
    with
    this_files as (
        select distinct source_file from {{ this }}
    ),
    last_arrival as (
        select coalesce(max(arrived_at), timestamp '1900-01-01') as at from {{ this }}
    ),
    dirty as (
        select lf.night
        from {{ source('raw', 'landed_files') }} as lf
        where
            lf.feed <> 'exchange_rates'
            and not exists (select 1 from this_files as t where t.source_file = lf.source_file)
        union
        select night from {{ this }} where row_status = 'held'
        union
        select c.night
        from {{ this }} as c
        where c.night >= (
            -- by name, not ref(): a ref in a hook would need an input in every unit test; the model
            -- already depends on it through int_exchange_rates.
            select min(r.rate_date) from {{ this.schema }}.int_exchange_rates_unioned as r
            where r.arrived_at > (select la.at from last_arrival as la)
        )
        union
        select h.night from {{ source('ops', 'feed_holds') }} as h
        where
            h.lifted_at is null
            and exists (select 1 from {{ this }} as c where c.feed = h.feed and c.night = h.night)
        union
        select q.night from {{ source('ops', 'quality_row_failures') }} as q
        where
            {{ ts_quarantining_failure('q') }}
            and exists (
                select 1 from {{ this }} as c
                where c.feed = q.feed and c.source_file = q.source_file and c.source_line = q.source_line
            )
    )
    select distinct night from dirty where night is not null
{%- endmacro %}


{% macro ts_converted_prepare_incremental() -%}
    {%- if is_incremental() -%}
        {{ ts_create_or_replace_table_as(this.schema ~ '.int_declarations_converted__dirty', ts_converted_dirty_nights_sql()) }};
        delete from {{ this }}
        where night in (select d.night from {{ this.schema }}.int_declarations_converted__dirty as d)
    {%- else -%}
        select 1
    {%- endif -%}
{%- endmacro %}


{#- Incremental marts (models/marts): one run rebuilds the nights that changed, found by
    mart_dirty_nights before any mart is touched, and the declaration keys with a version in those
    nights (mart_dirty_keys). Other models are read by name, not ref(), where a ref would make a
    cycle (a mart's previous state decides what to rebuild). -#}

{% macro ts_existing(identifier, schema=none) -%}
    {{ return(adapter.get_relation(database=this.database, schema=schema or this.schema, identifier=identifier)) }}
{%- endmacro %}


{#- The marts are rebuilt from scratch: a full refresh, or their first build. -#}
{% macro ts_marts_from_scratch() -%}
    {{ return(flags.FULL_REFRESH or ts_existing('mart_declarations_routed') is none) }}
{%- endmacro %}


{#- Pre-hook of a mart that is incremental by night: delete the nights being rebuilt. -#}
{% macro ts_delete_dirty_nights() -%}
    {%- if is_incremental() -%}
        delete from {{ this }} where night in (select d.night from {{ this.schema }}.mart_dirty_nights as d)
    {%- else -%}
        select 1
    {%- endif -%}
{%- endmacro %}


{#- Pre-hook of a mart keyed by declaration: delete the keys being rebuilt. -#}
{% macro ts_delete_dirty_keys(column='declaration_key') -%}
    {%- if is_incremental() -%}
        delete from {{ this }}
        where {{ column }} in (select k.declaration_key from {{ this.schema }}.mart_dirty_keys as k)
    {%- else -%}
        select 1
    {%- endif -%}
{%- endmacro %}


{#- The ok versions of declarations with their rank (1 = current: a later night wins, then a later
    arrival, then a later line; never load order), limited to the dirty keys when incremental. -#}
{% macro ts_declaration_versions(only_dirty_keys) -%}
    select
        routed.feed,
        routed.night,
        routed.source_file,
        routed.source_line,
        routed.declaration_key,
        row_number() over latest_first as version_rank,
        first_value(routed.night) over latest_first as latest_night
    from {{ ref('mart_declarations_routed') }} as routed
    where
        routed.route = 'ok'
        {%- if only_dirty_keys %}
        and routed.declaration_key in (select k.declaration_key from {{ ref('mart_dirty_keys') }} as k)
        {%- endif %}
    window latest_first as (
        partition by routed.declaration_key
        order by routed.night desc, routed.arrived_at desc, routed.source_file desc, routed.source_line desc
    )
{%- endmacro %}


{#- fct_consignment_matches is rebuilt over a window. An export's match can change while it or its
    partner declarations are recent; past the horizon (match_horizon_days, longer than any transit
    and the transit window) its match and orphan status are final unless a declaration of its
    consignment (same country pair and reference) changes. A run therefore rematches
    - the exports declared on or after as_of - horizon,
    - the exports whose key is dirty (mart_dirty_keys), and
    - every export of a consignment group with a member in that scope or a dirty member,
    against the imports of those groups, the imports from (as_of - horizon - max transit) on, and the
    dirty imports, leaving out imports already matched to an export outside the rematch. A full
    refresh matches everything; the two agree except where a fallback (no reference) choice chains
    across the horizon boundary, which needs a resend older than the horizon. -#}
{#- The exports a run rematches (rematch_export) and the imports they may pair with. -#}
{% macro ts_matches_scope_sql() -%}
    {%- set horizon = var('match_horizon_days', 90) | int -%}
    {%- set max_transit = var('fallback_max_transit_days', 30) | int -%}
        with
        members as (
            select country_code from {{ this.schema }}.dim_countries where is_member
        ),
        declarations as (
            select
                declaration_key,
                flow,
                declaration_date,
                case when flow = 'export' then reporter_country else partner_country end as exporter_country,
                case when flow = 'export' then partner_country else reporter_country end as importer_country,
                consignment_ref_norm
            from {{ this.schema }}.fct_declarations
            where
                flow in ('export', 'import')
                and reporter_country in (select m.country_code from members as m)
                and partner_country in (select m.country_code from members as m)
        ),
        dirty_keys as (
            select declaration_key from {{ this.schema }}.mart_dirty_keys
        ),
        cutoff as (
            select ({{ ts_as_of_night_sql(this.schema ~ '.fct_declarations') }}) - {{ horizon }} as cutoff_date
        ),
        seeds as (
            -- declarations whose match may change this run
            select d.*
            from declarations as d
            where
                d.declaration_date >= (select c.cutoff_date - {{ max_transit }} from cutoff as c)
                or d.declaration_key in (select k.declaration_key from dirty_keys as k)
        ),
        groups as (
            select distinct exporter_country, importer_country, consignment_ref_norm
            from seeds
            where consignment_ref_norm is not null
        ),
        scope as (
            select
                d.declaration_key,
                d.flow,
                d.flow = 'export' and (
                    d.declaration_date >= (select c.cutoff_date from cutoff as c)
                    or d.declaration_key in (select k.declaration_key from dirty_keys as k)
                    or g.consignment_ref_norm is not null
                ) as rematch_export,
                d.flow = 'import' as candidate_import
            from declarations as d
            left join groups as g
                on
                    d.exporter_country = g.exporter_country
                    and d.importer_country = g.importer_country
                    and d.consignment_ref_norm = g.consignment_ref_norm
            where d.declaration_key in (select s.declaration_key from seeds as s) or g.consignment_ref_norm is not null
        )
        select declaration_key, flow, rematch_export
        from scope
        where rematch_export or candidate_import
        union
        -- exports that left fct_declarations (quarantined later): their rows go
        select m.export_key, 'export', true
        from {{ this }} as m
        where
            m.export_key in (select k.declaration_key from dirty_keys as k)
            and m.export_key not in (select d.declaration_key from declarations as d)
        union
        -- exports matched to a dirty import are rematched with it
        select m.export_key, 'export', true
        from {{ this }} as m
        where m.import_key in (select k.declaration_key from dirty_keys as k)
{%- endmacro %}


{% macro ts_matches_prepare_incremental() -%}
    {%- if is_incremental() -%}
        {{ ts_create_or_replace_table_as(this.schema ~ '.fct_consignment_matches__scope', ts_matches_scope_sql()) }};

        delete from {{ this }}
        where export_key in (
            select s.declaration_key from {{ this.schema }}.fct_consignment_matches__scope as s
            where s.rematch_export
        )
    {%- else -%}
        select 1
    {%- endif -%}
{%- endmacro %}


{#- The night matching is judged at: var as_of_night (or env TRADESENTRY_AS_OF_NIGHT, which the
    pipeline sets so that --vars stay the same from one night to the next and dbt can parse
    partially), else the latest night landed, else the latest night declared. -#}
{% macro ts_as_of_night_sql(declarations) -%}
    {#- Read only when executing: an env_var read at parse time is recorded with its value, and a new
        value every night would make dbt re-parse the model and rewrite its partial-parse file (about
        1 s of every nightly invocation). -#}
    {%- set as_of_env = env_var('TRADESENTRY_AS_OF_NIGHT', '') if execute else '' -%}
    coalesce(
        {{ ts_date_literal(var('as_of_night', none) or as_of_env) }},
        (select max(landed_files.night) from {{ source('raw', 'landed_files') }} as landed_files),
        (select max(d.night) from {{ declarations }} as d)
    )
{%- endmacro %}
