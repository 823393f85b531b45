-- Records one evaluation; creates the approval when one is required and none exists yet.
-- KEYS: 1 call map, 2 audit, 3 events, 4 seq, 5 new approval, 6 tenant pending index,
--       7 run index, 8 expiring
-- ARGV: 1 time (RFC 3339), 2 decision, 3 reason, then the would-be approval's fields as
--       name/value pairs (they also fill the audit record when nothing is created).
-- Returns {'decided'} | {'created', id} | {'existing', id} | {'conflict', id, stored sha}
--       | {'audit_failed', error}
local time, decision, reason = ARGV[1], ARGV[2], ARGV[3]
local a = {}
for i = 4, #ARGV, 2 do a[ARGV[i]] = ARGV[i + 1] end
local new_id = a.id

-- Deny wins over an earlier approval; anything else is bound to the approval of this call.
if decision ~= 'deny' then
  local ex = redis.call('HMGET', KEYS[1], 'id', 'sha')
  if ex[1] then
    a.id = ex[1]
    if ex[2] ~= a.arguments_sha256 then
      local err = audit(KEYS[2], time, 'evaluate', a, 'refused',
        'arguments differ from those approval ' .. ex[1] .. ' binds to', '')
      if err then return {'audit_failed', err} end
      return {'conflict', ex[1], ex[2]}
    end
    local err = audit(KEYS[2], time, 'evaluate', a, 'require_approval',
      'the call already has approval ' .. ex[1], '')
    if err then return {'audit_failed', err} end
    return {'existing', ex[1]}
  end
end

if decision ~= 'require_approval' then
  a.id = ''
  local err = audit(KEYS[2], time, 'evaluate', a, decision, reason, '')
  if err then return {'audit_failed', err} end
  return {'decided'}
end

local err = audit(KEYS[2], time, 'evaluate', a, decision, reason, '')
if err then return {'audit_failed', err} end
emit(KEYS[3], KEYS[4], 'created', a)
redis.call('HSET', KEYS[5], unpack(flatten(a)))
redis.call('HSET', KEYS[1], 'id', new_id, 'sha', a.arguments_sha256)
redis.call('ZADD', KEYS[6], a.created_ms, new_id)
redis.call('ZADD', KEYS[7], a.created_ms, new_id)
redis.call('ZADD', KEYS[8], a.expires_ms, new_id)
return {'created', new_id}
