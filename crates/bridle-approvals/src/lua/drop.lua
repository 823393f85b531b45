-- Drops a final approval whose retention is over, as the sweeper trims its final event from
-- the Watch stream: its hash and call map if still there (their expiry normally took them
-- already; approvals stored before there was a retention have none), and its entries in the
-- state index and the run index (an emptied run index disappears with its last member).
-- KEYS: 1 approval, 2 call map, 3 state index, 4 run index
-- ARGV: 1 approval id
-- Returns 'dropped' | 'pending' (a pending approval is never dropped)
local id = ARGV[1]
if redis.call('HGET', KEYS[1], 'state') == 'pending' then return 'pending' end
redis.call('DEL', KEYS[1])
-- The call may have a newer approval by now, bound by a new call map: leave that one alone.
if redis.call('HGET', KEYS[2], 'id') == id then redis.call('DEL', KEYS[2]) end
redis.call('ZREM', KEYS[3], id)
redis.call('ZREM', KEYS[4], id)
return 'dropped'
