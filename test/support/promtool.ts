/** `promtool check metrics` (Debian's `prometheus` package) on an exposition: its findings (empty when clean) and exit code. */
import { spawn } from 'node:child_process';

export async function promtool(text: string): Promise<{ out: string; code: number | null }> {
  const child = spawn('promtool', ['check', 'metrics'], { stdio: ['pipe', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (d) => (out += d));
  child.stderr.on('data', (d) => (out += d));
  const code = await new Promise<number | null>((resolve) => {
    child.once('close', resolve);
    child.stdin.end(text);
  });
  return { out: out.trim(), code };
}
