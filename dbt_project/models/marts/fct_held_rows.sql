-- Rows held back, kept with the reason: the feed/night is under a hold (feed_held) or the
-- declaration's exchange rate is not published yet (rate_missing). They are harmonised in the
-- first run after the hold is lifted or the rate arrives.

select
    feed,
    night,
    source_file,
    source_line,
    reason_code as hold_reason_code,
    reason as hold_reason
from {{ ref('mart_declarations_routed') }}
where route = 'held'
