-- Argo CD health of a labtune.io/v1alpha1 Taxonomy, from the conditions the operator writes.
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
local function holds(type, value)
  return c[type] ~= nil and c[type].status == value
end
if holds("Stalled", "True") then
  hs.status, hs.message = "Degraded", c.Stalled.message
elseif holds("Validated", "False") then
  hs.status, hs.message = "Degraded", c.Validated.message
elseif holds("Ready", "True") and (c.Ready.observedGeneration or generation) >= generation then
  hs.status, hs.message = "Healthy", c.Ready.message
elseif holds("Reconciling", "True") then
  hs.message = c.Reconciling.message
elseif c.Ready ~= nil then
  hs.message = c.Ready.message
end
return hs
