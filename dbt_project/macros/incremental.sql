{#- Incremental int_declarations_converted: the nights to (re)build, written to a small table by the
    model's pre-hook (before its delete), so that the delete and the insert use the same set.

    A night is rebuilt when
    1. it has a landed declarations file with no row in the model yet: new nights, resends, nights
       whose hold was lifted (their rows were left out while held);
    2. it has rows held for a missing exchange rate (the rate may have arrived);
    3. an exchange-rates file landed since the model's latest row: every night from the earliest
       rate date in it on (a rate can only serve declarations dated on or after it);
    4. it has rows in the model that the run now leaves out: an active feed hold or a critical
       quality failure placed after it was harmonised.
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
