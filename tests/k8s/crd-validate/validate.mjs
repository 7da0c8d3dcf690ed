// Validates Prometheus operator objects against the schemas of @kubernetes-models/prometheus-operator
// (generated from the operator's Go API types: required fields, types, enums, patterns such as
// durations). Input on stdin: a JSON array of objects. Prints PASS/FAIL per object; exits 1 on any
// failure or unknown kind. Used by tests/k8s/check_manifests.py.
import { readFileSync } from "node:fs";
import { ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor";
import { PrometheusRule } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PrometheusRule";
import { PodMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PodMonitor";

const models = {
  "monitoring.coreos.com/v1/ServiceMonitor": ServiceMonitor,
  "monitoring.coreos.com/v1/PrometheusRule": PrometheusRule,
  "monitoring.coreos.com/v1/PodMonitor": PodMonitor,
};
const objects = JSON.parse(readFileSync(0, "utf8"));
let failed = 0;
for (const { source, object } of objects) {
  const key = `${object.apiVersion}/${object.kind}`;
  const name = `${source}: ${object.kind}/${object.metadata?.name}`;
  const Model = models[key];
  if (!Model) {
    console.log(`FAIL ${name}: no schema for ${key}`);
    failed++;
    continue;
  }
  try {
    new Model(object).validate();
    console.log(`PASS ${name} (schema of ${key})`);
  } catch (e) {
    console.log(`FAIL ${name}: ${e.message}`);
    failed++;
  }
}
process.exit(failed ? 1 : 0);
