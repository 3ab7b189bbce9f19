// E2B's JS SDK, as written for E2B's hosted service, against a Warren server.
// Configuration comes only from the environment: E2B_API_URL, E2B_API_KEY and optionally
// E2B_SANDBOX_URL / E2B_DOMAIN (and NODE_EXTRA_CA_CERTS for a self-signed server).
// E2B_JS_PACKAGE picks the installed SDK (`e2b`, the newest, or `e2b-2.45`, which checks the
// key's format). Exits 0 when every step checks out, 1 naming the failed step otherwise.
const pkg = process.env.E2B_JS_PACKAGE || 'e2b'
const { Sandbox, Template, waitForPort, BuildError, TimeoutError, NotFoundError } = await import(pkg)

for (const name of ['E2B_API_URL', 'E2B_API_KEY']) {
  if (!process.env[name]) {
    console.error(`smoke: ${name} is not set; this script runs against a Warren server (see ../README.md)`)
    process.exit(2)
  }
}

let step = 'start'
const started = Date.now()
const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

function expectEqual(actual, expected, what) {
  if (actual !== expected) {
    throw new Error(`${what}: expected ${JSON.stringify(expected)}, got ${JSON.stringify(actual)}`)
  }
}

async function expectThrow(what, fn, check) {
  try {
    await fn()
  } catch (err) {
    if (check && !check(err)) throw new Error(`${what}: unexpected ${err?.name}: ${err?.message}`)
    return err
  }
  throw new Error(`${what}: did not throw`)
}

const made = []
async function create(opts) {
  const s = await Sandbox.create(opts)
  made.push(s.sandboxId)
  return s
}

try {
  step = 'Sandbox.create()'
  const sandbox = await create()
  if (!sandbox.sandboxId) throw new Error('no sandboxId')

  step = "commands.run('echo hi && whoami')"
  const result = await sandbox.commands.run('echo hi && whoami')
  expectEqual(result.stdout, 'hi\nuser\n', 'stdout')
  expectEqual(result.stderr, '', 'stderr')
  expectEqual(result.exitCode, 0, 'exitCode')

  step = 'files.write() / read()'
  const content = `written by the JS SDK ${Date.now()}\n`
  const info = await sandbox.files.write('/home/user/smoke.txt', content)
  expectEqual(info.path, '/home/user/smoke.txt', 'written path')
  expectEqual(await sandbox.files.read('/home/user/smoke.txt'), content, 'read back')

  step = 'files.remove() of a missing path'
  await sandbox.files.remove('/home/user/never-there')

  step = 'relative cwd and symlink getInfo()'
  await sandbox.files.makeDir('jsdir')
  await sandbox.files.write('jsdir/t.txt', 'Hello')
  await sandbox.commands.run('ln -s t.txt l.txt', { cwd: 'jsdir' })
  const link = await sandbox.files.getInfo('jsdir/l.txt')
  expectEqual(link.symlinkTarget, '/home/user/jsdir/t.txt', 'symlink target')
  expectEqual(link.path, '/home/user/jsdir/l.txt', 'relative path resolved from home')

  step = 'the image has what E2B base has'
  const tools = await sandbox.commands.run(
    'python --version && pip --version && git --version && node --version && npm --version && curl --version && sudo -n true && echo tools-ok',
  )
  expectEqual(tools.stdout.trim().split('\n').pop(), 'tools-ok', 'tools')

  // Images are built on a host: on the Kubernetes backend a build is refused, saying so.
  if (process.env.WARREN_TEST_BACKEND === 'kubernetes') {
    step = 'Template.build() on the Kubernetes backend is refused'
    await expectThrow(
      'a build on Kubernetes',
      () => Template.build(Template().fromBaseImage().runCmd('true'), `js-kube-${Date.now()}`),
      (e) => e instanceof BuildError && String(e.message).includes('Kubernetes backend'),
    )
  } else {
    step = 'Template.build() from code, and a sandbox from it'
    const fs = await import('node:fs')
    const os = await import('node:os')
    const path = await import('node:path')
    const ctx = fs.mkdtempSync(path.join(os.tmpdir(), 'warren-tmpl-'))
    fs.writeFileSync(path.join(ctx, 'hello.txt'), 'hello from js\n')
    const name = `js-tmpl-${Date.now()}`
    const logs = []
    const template = Template({ fileContextPath: ctx })
      .fromBaseImage()
      .copy('hello.txt', '/home/user/hello.txt')
      .runCmd('echo made-by-$(whoami) > /home/user/made.txt')
      .setEnvs({ JS_TEMPLATE: 'yes' })
      .setStartCmd('python -m http.server 8001', waitForPort(8001))
    await Template.build(template, name, { onBuildLogs: (e) => logs.push(e.message) })
    if (!logs.some((m) => m.includes('COPY hello.txt'))) throw new Error(`build logs: ${logs.join(' | ')}`)
    const built = await create({ template: name })
    const check = await built.commands.run(
      'cat /home/user/hello.txt /home/user/made.txt && echo $JS_TEMPLATE && curl -s -o /dev/null -w "%{http_code}" localhost:8001',
    )
    expectEqual(check.stdout, 'hello from js\nmade-by-user\nyes\n200', 'template sandbox')
    await expectThrow(
      'a failing step',
      () => Template.build(Template().fromBaseImage().runCmd('exit 3'), `${name}-bad`),
      (e) => e instanceof BuildError && String(e.message).includes('exited with code 3'),
    )
  }

  step = 'kill() while a command streams'
  const streaming = await create()
  const cmd = await streaming.commands.run('sleep 60', { background: true })
  await streaming.kill()
  const err = await expectThrow('wait() on a killed sandbox', () => cmd.wait())
  if (!String(err?.message).includes('sandbox was killed or reached its end of life')) {
    throw new Error(`wait() on a killed sandbox: ${err?.name}: ${err?.message}`)
  }

  step = 'setTimeout(5) ends the sandbox on time'
  const short = await create()
  await short.setTimeout(5_000)
  await sleep(6_000)
  expectEqual(await short.isRunning(), false, 'isRunning after its timeout')

  step = 'kill()'
  expectEqual(await sandbox.kill(), true, 'kill() result')
  step = 'Sandbox.kill(id) after kill'
  expectEqual(await Sandbox.kill(sandbox.sandboxId), false, 'second kill')

  console.log(`smoke: ok (${pkg}) in ${Date.now() - started} ms`)
} catch (err) {
  console.error(`smoke: FAILED (${pkg}) at ${step}: ${err?.name ?? 'Error'}: ${err?.message ?? err}`)
  if (err?.stack) console.error(err.stack)
  process.exitCode = 1
} finally {
  for (const id of made) {
    try {
      await Sandbox.kill(id)
    } catch {
      // teardown only
    }
  }
}
