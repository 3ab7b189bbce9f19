// E2B's JS SDK, as written for E2B's hosted service, against a Warren server.
// Configuration comes only from the environment: E2B_API_URL, E2B_API_KEY and optionally
// E2B_SANDBOX_URL / E2B_DOMAIN (and NODE_EXTRA_CA_CERTS for a self-signed server).
// Exits 0 when every step checks out, 1 with a message naming the failed step otherwise.
import { Sandbox } from 'e2b'

for (const name of ['E2B_API_URL', 'E2B_API_KEY']) {
  if (!process.env[name]) {
    console.error(`smoke: ${name} is not set; this script runs against a Warren server (see ../README.md)`)
    process.exit(2)
  }
}

let step = 'start'
const started = Date.now()

function expectEqual(actual, expected, what) {
  if (actual !== expected) {
    throw new Error(`${what}: expected ${JSON.stringify(expected)}, got ${JSON.stringify(actual)}`)
  }
}

let sandbox
try {
  step = 'Sandbox.create()'
  sandbox = await Sandbox.create()
  if (!sandbox.sandboxId) throw new Error('no sandboxId')

  step = "commands.run('echo hi && whoami')"
  const result = await sandbox.commands.run('echo hi && whoami')
  expectEqual(result.stdout, 'hi\nuser\n', 'stdout')
  expectEqual(result.stderr, '', 'stderr')
  expectEqual(result.exitCode, 0, 'exitCode')

  step = 'files.write()'
  const content = `written by the JS SDK ${Date.now()}\n`
  const info = await sandbox.files.write('/home/user/smoke.txt', content)
  expectEqual(info.path, '/home/user/smoke.txt', 'written path')

  step = 'files.read()'
  expectEqual(await sandbox.files.read('/home/user/smoke.txt'), content, 'read back')

  step = 'kill()'
  const killed = await sandbox.kill()
  expectEqual(killed, true, 'kill() result')
  step = 'Sandbox.kill(id) after kill'
  expectEqual(await Sandbox.kill(sandbox.sandboxId), false, 'second kill')
  sandbox = undefined

  console.log(`smoke: ok (create, run, write, read, kill) in ${Date.now() - started} ms`)
} catch (err) {
  console.error(`smoke: FAILED at ${step}: ${err?.name ?? 'Error'}: ${err?.message ?? err}`)
  if (err?.stack) console.error(err.stack)
  process.exitCode = 1
} finally {
  if (sandbox) {
    try {
      await Sandbox.kill(sandbox.sandboxId)
    } catch {
      // teardown only
    }
  }
}
