-- Versions of declarations replaced by a later one (a later night, or the same night arriving
-- later): same columns as fct_declarations plus the night of the version that replaced them.

with

converted as (
    select * from {{ ref('int_declarations_converted') }}
),

routed as (
    select * from {{ ref('mart_declarations_routed') }}
)

select
    {{- ts_select_declaration_columns('converted') }},
    routed.latest_night as replaced_by_night
from converted
inner join routed
    on
        converted.feed = routed.feed
        and converted.source_file = routed.source_file
        and converted.source_line = routed.source_line
where routed.route = 'ok' and routed.version_rank > 1
