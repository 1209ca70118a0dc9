// Evaluates IAM requests against one identity policy with @cloud-copilot/iam-simulate, a model
// of AWS's policy evaluation (conditions such as aws:RequestTag, aws:ResourceTag and
// ec2:CreateAction included).
//
// Standard input: {"policy": {...}, "account": "123456789012", "principal": "arn:...",
//                  "requests": [{"action", "resource", "context": {...}, "validate": bool}]}
// Standard output: one decision per request, in order: {"decision": "Allowed" | "ImplicitlyDenied"
// | "ExplicitlyDenied" | "Invalid", "detail": ...}.
//
// `validate: false` skips the simulator's check of the resource ARN against the action's resource
// types: AWS's public SSM parameters have no account in their ARN, which the ARN patterns the
// simulator checks against do not allow.
const path = require('node:path')
const simulatorDir = process.env.STOKER_IAM_SIMULATOR
if (!simulatorDir) {
  console.error('STOKER_IAM_SIMULATOR is not set: run hack/install-aws-checkers.sh and source the local env')
  process.exit(2)
}
const simulator = require(require.resolve('@cloud-copilot/iam-simulate', { paths: [path.resolve(simulatorDir)] }))

async function main() {
  const chunks = []
  for await (const chunk of process.stdin) chunks.push(chunk)
  const input = JSON.parse(Buffer.concat(chunks).toString())
  const decisions = []
  for (const request of input.requests) {
    const simulation = {
      identityPolicies: [{ name: 'stoker', policy: input.policy }],
      serviceControlPolicies: [],
      resourceControlPolicies: [],
      request: {
        action: request.action,
        principal: input.principal,
        resource: { resource: request.resource, accountId: input.account },
        contextVariables: request.context,
      },
    }
    if (request.validate === false) {
      const result = simulator.runUnsafeSimulation(simulation, {}) // the decision itself
      decisions.push({ decision: result })
      continue
    }
    const response = await simulator.runSimulation(simulation, {})
    if (response.resultType === 'error') {
      decisions.push({ decision: 'Invalid', detail: response.errors })
    } else {
      decisions.push({ decision: response.overallResult })
    }
  }
  process.stdout.write(JSON.stringify(decisions))
}

main().catch((error) => {
  console.error(error)
  process.exit(1)
})
