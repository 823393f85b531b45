-- PENDING -> APPROVED/DENIED, once. Every attempt is audited, refused ones too.
-- KEYS: the transition layout (see expire() in the prelude).
-- ARGV: 1 time, 2 now ms, 3 outcome ('approved'|'denied'), 4 approver, 5 reason,
--       6 arguments sha the approver saw ('' = not checked), 7 tenant the keys were built for,
--       8 retention of a final approval (ms), 9 the approver's id (distinct people are
--       distinct ids), 10 the approver's groups (space-separated)
-- Returns {'decided'} | {'not_found'} | {'wrong_tenant'}
--       | {'not_pending', state, decided_by, decided_ms, expires_ms}
--       | {'expired', expires_ms} | {'args_changed', stored sha} | {'audit_failed', error}
--       | {'duty', 'starter'|'group'|'twice'} (separation of duties refused it)
--       | {'partial', approvals so far, approvals required} (approved, more needed)
local time, now, outcome, actor, reason, want_sha, tenant, retention, actor_id, actor_groups =
  ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9], ARGV[10]
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

-- Separation of duties: the run's starter, the approver groups, distinct people.
if a.not_the_starter == '1' and (a.started_by or '') ~= '' and actor_id == a.started_by then
  return refuse('separation of duties: the run\'s starter may not decide its calls',
    {'duty', 'starter'})
end
if (a.approver_groups or '') ~= '' then
  local member = false
  for g in string.gmatch(actor_groups, '%S+') do
    for want in string.gmatch(a.approver_groups, '%S+') do
      if g == want then member = true end
    end
  end
  if not member then
    return refuse('separation of duties: not in an approver group (' .. a.approver_groups .. ')',
      {'duty', 'group'})
  end
end
local approved_by = a.approved_by or ''
if outcome == 'approved' then
  local need = tonumber(a.approvals_required or '1') or 1
  local n = 0
  for x in string.gmatch(approved_by, '%S+') do
    if x == actor_id then
      return refuse('separation of duties: approved already by the same person', {'duty', 'twice'})
    end
    n = n + 1
  end
  n = n + 1
  approved_by = (approved_by == '' and actor_id) or (approved_by .. ' ' .. actor_id)
  if n < need then
    -- One more approval, not yet the decision: audited, kept on the approval, no event.
    local err = audit(KEYS[2], time, 'decide', a, 'approval_added',
      reason .. ' (' .. n .. ' of ' .. need .. ')', actor)
    if err then return {'audit_failed', err} end
    redis.call('HSET', KEYS[1], 'approved_by', approved_by)
    return {'partial', tostring(n), tostring(need)}
  end
end

local err = audit(KEYS[2], time, 'decide', a, outcome, reason, actor)
if err then return {'audit_failed', err} end
a.state = outcome
a.decided_by = actor
a.decided_ms = now
a.reason = reason
a.approved_by = approved_by
emit(KEYS[3], KEYS[4], 'decided', a)
redis.call('HSET', KEYS[1], 'state', outcome, 'decided_by', actor, 'decided_ms', now, 'reason', reason,
  'approved_by', approved_by)
redis.call('ZREM', KEYS[5], a.id)
if outcome == 'approved' then
  redis.call('ZADD', KEYS[6], a.created_ms, a.id)
else
  redis.call('ZADD', KEYS[7], a.created_ms, a.id)
end
redis.call('ZREM', KEYS[9], a.id)
retain(retention)
return {'decided'}
