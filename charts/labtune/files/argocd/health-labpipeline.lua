-- Argo CD health of a labtune.io/v1alpha1 LabPipeline: Healthy once the Taxonomy's newest leaves have
-- run (Idle), Progressing while a run is active or the Taxonomy is awaited, Degraded when the newest
-- run failed (Stalled), Suspended while spec.suspend holds.
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
if holds("Stalled") then
  hs.status, hs.message = "Degraded", c.Stalled.message
elseif obj.spec.suspend == true then
  hs.status = "Suspended"
  if c.Ready ~= nil then
    hs.message = c.Ready.message
  end
elseif holds("Ready") then
  hs.status, hs.message = "Healthy", c.Ready.message
elseif c.Ready ~= nil then
  hs.message = c.Ready.message
end
return hs
