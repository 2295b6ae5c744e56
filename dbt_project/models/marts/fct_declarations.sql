-- The unified declarations: one row per declaration key, its latest version (a later night wins,
-- then a later arrival, then a later line; load order never decides).

with

converted as (
    select * from {{ ref('int_declarations_converted') }}
),

routed as (
    select * from {{ ref('mart_declarations_routed') }}
)

select
    {{- ts_select_declaration_columns('converted') }}
from converted
inner join routed
    on
        converted.feed = routed.feed
        and converted.source_file = routed.source_file
        and converted.source_line = routed.source_line
where routed.route = 'ok' and routed.version_rank = 1
