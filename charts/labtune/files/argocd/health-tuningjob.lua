-- Argo CD health of a labtune.io/v1alpha1 TuningJob, from the conditions the operator writes (a model
-- that failed its evaluation gate is Failed, reason GateFailed: Degraded).
local hs = {status = "Progressing", message = ""}
local generation = obj.metadata.generation or 0
local status = obj.status or {}
if status.observedGeneration == nil or status.observedGeneration < generation then
  hs.message = "waiting for the operator to observe generation " .. generation
  return hs
end
local c = {}
for _, condition in ipairs(status.conditions or {}) do
  c[condition.type] = condition
end
local function holds(type)
  return c[type] ~= nil and c[type].status == "True"
end
if holds("Failed") then
  hs.status, hs.message = "Degraded", c.Failed.message
elseif holds("Stalled") then
  hs.status, hs.message = "Degraded", c.Stalled.message
elseif holds("Succeeded") then
  hs.status, hs.message = "Healthy", c.Succeeded.message
elseif holds("Suspended") then
  hs.status, hs.message = "Suspended", c.Suspended.message
elseif c.Ready ~= nil then
  hs.message = c.Ready.message
end
return hs
