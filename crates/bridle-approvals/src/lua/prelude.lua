-- Helpers shared by every script (prepended to each).
--
-- Order of writes in every script: the audit record first (with pcall, so a refusal comes back
-- as 'audit_failed' and nothing else is written: fail closed), then the event, then the state.
-- Redis does not roll back a script that errors half way, so the riskiest write goes first.

local function load_approval(key)
  local flat = redis.call('HGETALL', key)
  if #flat == 0 then return nil end
  local a = {}
  for i = 1, #flat, 2 do a[flat[i]] = flat[i + 1] end
  return a
end

local function flatten(t)
  local out = {}
  for k, v in pairs(t) do
    out[#out + 1] = k
    out[#out + 1] = v
  end
  return out
end

-- Appends one audit record; returns the error text when the stream refused it, else nil.
local function audit(stream, time, action, a, decision, reason, actor)
  local r = redis.pcall('XADD', stream, '*',
    'time', time, 'action', action,
    'tenant', a.tenant or '', 'agent', a.agent or '', 'run', a.run_id or '',
    'step', a.step or '', 'call', a.call_id or '', 'tool', a.tool or '',
    'args_sha256', a.arguments_sha256 or '',
    'decision', decision, 'reason', reason, 'approval', a.id or '', 'actor', actor)
  if type(r) == 'table' and r.err then return r.err end
  return nil
end

-- Appends an event carrying a copy of the approval, at the next dense offset n (entry id
-- 0-n). The counter moves only once the entry is in, so a failed XADD leaves no gap.
local function emit(events, seq, kind, a)
  local n = tonumber(redis.call('GET', seq) or '0') + 1
  redis.call('XADD', events, '0-' .. n, 'kind', kind, unpack(flatten(a)))
  redis.call('SET', seq, n)
  return n
end

-- Starts the retention of an approval that has just become final: its hash and its call map
-- (KEYS 1 and 10 of the transition layout) expire `ms` milliseconds from now. Its index
-- entries and events go when the sweeper trims the events (see drop.lua).
local function retain(ms)
  redis.call('PEXPIRE', KEYS[1], ms)
  redis.call('PEXPIRE', KEYS[10], ms)
end

-- PENDING -> EXPIRED with the transition-script KEYS layout:
-- 1 approval, 2 audit, 3 events, 4 seq, 5 pending, 6 approved, 7 denied, 8 expired, 9 expiring,
-- 10 call map; `retention` is the approval's retention in ms.
local function expire(a, time, now, retention)
  local err = audit(KEYS[2], time, 'expire', a, 'expired', 'no decision before it expired', '')
  if err then return err end
  a.state = 'expired'
  a.decided_ms = now
  a.reason = 'expired without a decision'
  emit(KEYS[3], KEYS[4], 'expired', a)
  redis.call('HSET', KEYS[1], 'state', a.state, 'decided_ms', a.decided_ms, 'reason', a.reason)
  redis.call('ZREM', KEYS[5], a.id)
  redis.call('ZADD', KEYS[8], a.created_ms, a.id)
  redis.call('ZREM', KEYS[9], a.id)
  retain(retention)
  return nil
end
