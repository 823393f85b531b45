-- PENDING -> APPROVED/DENIED, once. Every attempt is audited, refused ones too.
-- KEYS: the transition layout (see expire() in the prelude).
-- ARGV: 1 time, 2 now ms, 3 outcome ('approved'|'denied'), 4 approver, 5 reason,
--       6 arguments sha the approver saw ('' = not checked), 7 tenant the keys were built for,
--       8 retention of a final approval (ms)
-- Returns {'decided'} | {'not_found'} | {'wrong_tenant'}
--       | {'not_pending', state, decided_by, decided_ms, expires_ms}
--       | {'expired', expires_ms} | {'args_changed', stored sha} | {'audit_failed', error}
local time, now, outcome, actor, reason, want_sha, tenant, retention =
  ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8]
local a = load_approval(KEYS[1])
if not a then return {'not_found'} end
if a.tenant ~= tenant then return {'wrong_tenant'} end

local function refuse(why, reply)
  local err = audit(KEYS[2], time, 'decide', a, 'refused', why, actor)
  if err then return {'audit_failed', err} end
  return reply
end

if a.state ~= 'pending' then
  return refuse('already ' .. a.state,
    {'not_pending', a.state, a.decided_by or '', a.decided_ms or '', a.expires_ms})
end
if tonumber(now) >= tonumber(a.expires_ms) then
  local reply = refuse('expired', {'expired', a.expires_ms})
  if reply[1] == 'audit_failed' then return reply end
  local err = expire(a, time, now, retention)
  if err then return {'audit_failed', err} end
  return reply
end
if want_sha ~= '' and want_sha ~= a.arguments_sha256 then
  return refuse('arguments changed', {'args_changed', a.arguments_sha256})
end

local err = audit(KEYS[2], time, 'decide', a, outcome, reason, actor)
if err then return {'audit_failed', err} end
a.state = outcome
a.decided_by = actor
a.decided_ms = now
a.reason = reason
emit(KEYS[3], KEYS[4], 'decided', a)
redis.call('HSET', KEYS[1], 'state', outcome, 'decided_by', actor, 'decided_ms', now, 'reason', reason)
redis.call('ZREM', KEYS[5], a.id)
if outcome == 'approved' then
  redis.call('ZADD', KEYS[6], a.created_ms, a.id)
else
  redis.call('ZADD', KEYS[7], a.created_ms, a.id)
end
redis.call('ZREM', KEYS[9], a.id)
retain(retention)
return {'decided'}
