-- Every row that cannot be used, one row per landed line: lines the CSV reader rejected (parse),
-- rows failing a critical quality expectation (quality) and rows that could not be converted
-- (harmonise).

with

parse_rejects as (
    select
        feed,
        night,
        source_file,
        source_line,
        min(reason_code) as reason_code,
        string_agg(reason, '; ' order by reason) as reason,
        min(raw_line) as raw_line
    from {{ source('raw', 'parse_rejects') }}
    group by feed, night, source_file, source_line
),

routed as (
    select * from {{ ref('mart_declarations_routed') }}
    where route = 'quarantine'
)

select
    feed,
    night,
    source_file,
    source_line,
    'parse' as stage,
    reason_code,
    reason,
    cast(null as varchar) as declaration_id,
    {{ ts_json_object(['raw_line']) }} as raw_values
from parse_rejects

union all

select
    feed,
    night,
    source_file,
    source_line,
    stage,
    reason_code,
    reason,
    declaration_id,
    raw_values
from routed
