-- PENDING -> EXPIRED once its time is up. Safe to run from every replica at once: only the
-- first run finds it pending.
-- KEYS: the transition layout (see expire() in the prelude).
-- ARGV: 1 time, 2 now ms, 3 tenant the keys were built for, 4 approval id,
--       5 retention of a final approval (ms)
-- Returns {'expired'} | {'not_found'} | {'wrong_tenant'} | {'not_pending', state}
--       | {'not_due'} | {'audit_failed', error}
local time, now, tenant, id, retention = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local a = load_approval(KEYS[1])
if not a then
  redis.call('ZREM', KEYS[9], id)
  return {'not_found'}
end
if a.tenant ~= tenant then return {'wrong_tenant'} end
if a.state ~= 'pending' then
  redis.call('ZREM', KEYS[9], id)
  return {'not_pending', a.state}
end
if tonumber(now) < tonumber(a.expires_ms) then return {'not_due'} end
local err = expire(a, time, now, retention)
if err then return {'audit_failed', err} end
return {'expired'}
