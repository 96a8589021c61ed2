/**
 * The panel's model: pure functions from the runtime's status document to what the
 * panel and the status bar show. No JupyterLab imports, so node's test runner can
 * exercise it directly (tests/model.test.ts).
 */

/** One kernel in `GET /colabremote/api/status`. */
export interface IKernelStatus {
  id: string;
  name: string | null;
  execution_state: string | null;
  last_activity: string | null;
  connections: number;
  memory_bytes: number | null;
}

/** One GPU, in colabtools' field names. */
export interface IGpu {
  name: string;
  memoryUsedBytes: number;
  memoryTotalBytes: number;
  gpuUtilization: number;
  memoryUtilization: number;
  everUsed?: boolean;
}

/** The resources document (the one Colab's gauges read). */
export interface IResources {
  memory: {
    totalBytes: number;
    freeBytes: number;
    kernels?: { uuid: string; usedBytes: number }[];
  };
  disks: {
    filesystem: { label: string; totalBytes: number; usedBytes: number };
  }[];
  gpus: IGpu[];
}

/** Whether a kernel can start on the runtime (`kernels_available` in the status). */
export interface IKernelsAvailable {
  /** A Python kernelspec whose interpreter has ipykernel; null when unknown (gateway down). */
  python: boolean | null;
  kernelspecs: string[];
  default: string;
  /** What is wrong and the command that fixes it, or null. */
  advice: string | null;
}

/** A port a kernel (or its child) listens on, or a companion's `--forward`. */
export interface IPortStatus {
  port: number;
  /** `kernel`: found listening in a kernel's process tree; `explicit`: a `--forward`. */
  source: 'kernel' | 'explicit';
  address: string | null;
  pid: number | null;
  process: string | null;
  kernel_id: string | null;
  kernel_name: string | null;
  /** Where companions forward it on their machines. */
  forwards: { client: string; local_port: number }[];
}

/** `GET /colabremote/api/status`. */
export interface IStatus {
  version: string;
  /** False on a Jupyter server that loads the extension without being a runtime (`jupyter lab`). */
  runtime?: boolean;
  kernels_available?: IKernelsAvailable;
  uptime_seconds: number;
  kernels: IKernelStatus[];
  colab_port: number;
  forwards: Record<string, { local_port: number; reported: number }>;
  /** Listening ports and where they are forwarded (servers predating it have none). */
  ports?: IPortStatus[];
  connections: {
    colab_kernel_websockets: number;
    kernel_websockets: number;
    http_over_websocket: number;
  };
  resources: IResources;
}

/** `POST /colabremote/api/tokens/NAME/rotate`. */
export interface IRotateResult {
  name: string;
  token: string;
  url: string;
}

/** What went wrong with a request, reduced to what the message needs. */
export interface IErrorInfo {
  /** `network`: no answer at all; `response`: an HTTP error status; `other`: anything else. */
  kind: 'network' | 'response' | 'other';
  status?: number;
  message?: string;
}

export type Level = 'ok' | 'warn' | 'high';

/** One bar: RAM, a disk or a GPU's memory. */
export interface IGauge {
  label: string;
  /** e.g. "3.1 GiB of 15.5 GiB". */
  text: string;
  /** 0..100, or null when the total is unknown. */
  percent: number | null;
  percentText: string;
  level: Level;
  /** Extra detail, e.g. a GPU's utilization. */
  detail: string;
}

export interface IKernelRow {
  id: string;
  name: string;
  state: string;
  lastActivity: string;
  memory: string;
  connections: number;
}

/** One forwarded (or forwardable) port in the panel. */
export interface IPortRow {
  port: number;
  /** "tensorboard (kernel python3, pid 4242)", or "port 6006 (--forward)". */
  label: string;
  /** Links on the companion's machine: http://localhost:LOCAL/. */
  links: { url: string; text: string }[];
  /** Shown when no companion forwards it. */
  note: string | null;
}

export const NO_PORTS_TEXT =
  'No app is listening in a kernel. Web apps that kernels or their child processes serve ' +
  '(TensorBoard, Gradio, Streamlit…) are forwarded by `jupyter colabremote start HOST` ' +
  'and listed here with their links.';

export const NOT_FORWARDED_NOTE =
  'not forwarded: no companion is connected (`jupyter colabremote start HOST` forwards it)';

/** The port rows, in port order. */
export function portRows(ports: IPortStatus[] | null | undefined): IPortRow[] {
  return [...(ports || [])]
    .sort((a, b) => a.port - b.port)
    .map(p => {
      const who = [
        p.kernel_name ? `kernel ${p.kernel_name}` : '',
        p.pid ? `pid ${p.pid}` : ''
      ]
        .filter(Boolean)
        .join(', ');
      const label =
        p.source === 'explicit' || !p.process
          ? `port ${p.port} (--forward)`
          : `${p.process} (${who}), port ${p.port}`;
      const links = (p.forwards || []).map(f => ({
        url: `http://localhost:${f.local_port}/`,
        text: `localhost:${f.local_port}`
      }));
      return {
        port: p.port,
        label,
        links,
        note: links.length ? null : NOT_FORWARDED_NOTE
      };
    });
}

/** Everything the panel renders. */
export interface IView {
  /** False: this server is not a Colab runtime; no URL or token controls are shown. */
  runtime: boolean;
  /** The explanation shown instead of the URL on a server that is not a runtime. */
  notRuntime: string | null;
  /** Why kernels cannot start here and what to run, or null. */
  kernelAdvice: string | null;
  url: string;
  hasToken: boolean;
  /** Shown under the URL when there is something to explain (no token known). */
  hint: string | null;
  /** Where the port in the URL comes from, when a companion forwards it. */
  portNote: string | null;
  gauges: IGauge[];
  /** Shown instead of GPU gauges when there is no GPU. */
  gpuNote: string | null;
  kernels: IKernelRow[];
  /** Listening ports and their links (a runtime only). */
  ports: IPortRow[];
  statusText: string;
  /** "jupyter-colab-remote 0.1.0, up 3 min". */
  summary: string;
}

export const NO_TOKEN_HINT =
  'This page does not know the token it was opened with (it was opened without a ' +
  'token in its address, or reloaded), so the URL above has none. Rotate the token to ' +
  'get a URL with a fresh one, or use the URL that `jupyter colabremote serve` printed.';

export const NOT_RUNTIME_MESSAGE =
  'This JupyterLab is not a Colab runtime: Colab cannot connect to it, so there is no URL ' +
  'to paste. To make one, run `jupyter colabremote serve` on the machine that should run ' +
  'the notebooks (it prints the URL for Colab), or, from your laptop, ' +
  "`jupyter colabremote start HOST` to run it on HOST over SSH. The runtime's own " +
  'JupyterLab then shows its URL here.';

/** Whether the status comes from a Colab runtime (servers predating the field are). */
export function isRuntime(status: IStatus | null | undefined): boolean {
  return !!status && status.runtime !== false;
}

/** The server's base path, always with a leading and a trailing slash. */
export function normalizeBasePath(basePath: string): string {
  let path = basePath || '/';
  if (!path.startsWith('/')) {
    path = '/' + path;
  }
  if (!path.endsWith('/')) {
    path += '/';
  }
  return path;
}

/**
 * The URL to paste into Colab's "Connect to a local runtime" dialog. Colab accepts only
 * http://localhost:PORT/..., whatever host the browser reached the server by.
 */
export function colabUrl(
  port: number,
  basePath: string,
  token?: string | null
): string {
  const base = `http://localhost:${port}${normalizeBasePath(basePath)}`;
  return token ? `${base}?token=${encodeURIComponent(token)}` : base;
}

/** The `token` query parameter of a URL, or null. */
export function tokenFromUrl(href: string): string | null {
  if (!href) {
    return null;
  }
  try {
    return new URL(href).searchParams.get('token') || null;
  } catch {
    return null;
  }
}

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];

/** Binary units: "512 B", "1.5 KiB", "15.6 GiB", "512 MiB"; "—" when unknown. */
export function formatBytes(bytes: number | null | undefined): string {
  if (
    bytes === null ||
    bytes === undefined ||
    !Number.isFinite(bytes) ||
    bytes < 0
  ) {
    return '—';
  }
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < UNITS.length - 1) {
    value /= 1024;
    unit++;
  }
  if (unit === 0) {
    return `${Math.round(value)} B`;
  }
  // Three significant digits at most: 1.5 GiB, 15.6 GiB, 512 MiB.
  const text = value >= 100 ? value.toFixed(0) : value.toFixed(1);
  return `${text} ${UNITS[unit]}`;
}

/** used/total as 0..100 (clamped); null when the total is unknown. */
export function percent(used: number, total: number): number | null {
  if (!Number.isFinite(used) || !Number.isFinite(total) || total <= 0) {
    return null;
  }
  return Math.min(100, Math.max(0, (used / total) * 100));
}

/** "42%", "<1%" for a small non-zero share, "—" when unknown. */
export function formatPercent(value: number | null): string {
  if (value === null || !Number.isFinite(value)) {
    return '—';
  }
  if (value > 0 && value < 1) {
    return '<1%';
  }
  return `${Math.round(value)}%`;
}

/** Bar colour: warn from 75%, high from 90%. */
export function level(value: number | null): Level {
  if (value === null) {
    return 'ok';
  }
  return value >= 90 ? 'high' : value >= 75 ? 'warn' : 'ok';
}

/** "45 s", "3 min", "2 h 5 min", "3 d 4 h". */
export function formatDuration(seconds: number): string {
  const s = Math.max(0, Math.floor(seconds));
  if (s < 60) {
    return `${s} s`;
  }
  const minutes = Math.floor(s / 60);
  if (minutes < 60) {
    return `${minutes} min`;
  }
  const hours = Math.floor(minutes / 60);
  if (hours < 24) {
    const rest = minutes % 60;
    return rest ? `${hours} h ${rest} min` : `${hours} h`;
  }
  const days = Math.floor(hours / 24);
  const rest = hours % 24;
  return rest ? `${days} d ${rest} h` : `${days} d`;
}

/** "just now", "12 s ago", "3 min ago"; "—" for a missing or unreadable time. */
export function formatAge(iso: string | null | undefined, now: Date): string {
  if (!iso) {
    return '—';
  }
  const then = Date.parse(iso);
  if (Number.isNaN(then)) {
    return '—';
  }
  const seconds = (now.getTime() - then) / 1000;
  // A few seconds either way (clock steps, rounding) read as "just now".
  if (seconds < 5) {
    return 'just now';
  }
  return `${formatDuration(seconds)} ago`;
}

/** "1 client", "2 kernels", "0 kernels". */
export function plural(count: number, word: string): string {
  return `${count} ${word}${count === 1 ? '' : 's'}`;
}

/** The status bar: "Colab: 1 client, 2 kernels", or "Colab: offline" after an error. */
export function statusBarText(
  status: IStatus | null,
  error: IErrorInfo | null = null
): string {
  if (error) {
    return 'Colab: offline';
  }
  if (!status) {
    return 'Colab: …';
  }
  if (!isRuntime(status)) {
    return 'Colab: not a runtime';
  }
  const clients = status.connections?.colab_kernel_websockets ?? 0;
  return `Colab: ${plural(clients, 'client')}, ${plural(status.kernels.length, 'kernel')}`;
}

/** RAM, disk and GPU bars from the resources document. */
export function gauges(resources: IResources | null | undefined): IGauge[] {
  const out: IGauge[] = [];
  if (!resources) {
    return out;
  }
  const mem = resources.memory;
  if (mem && mem.totalBytes > 0) {
    const used = Math.max(0, mem.totalBytes - mem.freeBytes);
    out.push(gauge('RAM', used, mem.totalBytes, ''));
  }
  const disks = resources.disks || [];
  disks.forEach((disk, i) => {
    const fs = disk.filesystem;
    const label = disks.length > 1 ? `Disk ${i + 1}` : 'Disk';
    out.push(gauge(label, fs.usedBytes, fs.totalBytes, ''));
  });
  const gpus = resources.gpus || [];
  gpus.forEach((gpu, i) => {
    const label =
      gpus.length > 1 ? `GPU ${i}: ${gpu.name}` : `GPU: ${gpu.name}`;
    const util = formatPercent(gpu.gpuUtilization * 100);
    out.push(
      gauge(
        label,
        gpu.memoryUsedBytes,
        gpu.memoryTotalBytes,
        `utilization ${util}`
      )
    );
  });
  return out;
}

function gauge(
  label: string,
  used: number,
  total: number,
  detail: string
): IGauge {
  const p = percent(used, total);
  return {
    label,
    text: `${formatBytes(used)} of ${formatBytes(total)}`,
    percent: p,
    percentText: formatPercent(p),
    level: level(p),
    detail
  };
}

/** One table row per kernel, in the order the server lists them. */
export function kernelRows(kernels: IKernelStatus[], now: Date): IKernelRow[] {
  return (kernels || []).map(k => ({
    id: k.id,
    name: k.name || 'unknown',
    state: k.execution_state || 'unknown',
    lastActivity: formatAge(k.last_activity, now),
    memory: formatBytes(k.memory_bytes),
    connections: k.connections || 0
  }));
}

export interface IViewOptions {
  /** The token to put into the URL (this session's, or the newest after a rotation). */
  token: string | null;
  /** The server's base path (PageConfig baseUrl). */
  basePath: string;
  now: Date;
}

/** The whole panel from one status document. */
export function toView(status: IStatus, options: IViewOptions): IView {
  const forwards = Object.entries(status.forwards || {});
  let portNote: string | null = null;
  if (forwards.length) {
    const [client, forward] = forwards[forwards.length - 1];
    portNote =
      `Port ${forward.local_port} is the local port the companion on "${client}" ` +
      'forwards to this server.';
  }
  const runtime = isRuntime(status);
  const hasToken = runtime && !!options.token;
  return {
    runtime,
    notRuntime: runtime ? null : NOT_RUNTIME_MESSAGE,
    kernelAdvice: status.kernels_available?.advice || null,
    url: runtime
      ? colabUrl(status.colab_port, options.basePath, options.token)
      : '',
    hasToken,
    hint: runtime && !hasToken ? NO_TOKEN_HINT : null,
    portNote: runtime ? portNote : null,
    gauges: gauges(status.resources),
    gpuNote:
      status.resources && (status.resources.gpus || []).length
        ? null
        : 'No GPU found.',
    kernels: kernelRows(status.kernels, options.now),
    ports: runtime ? portRows(status.ports) : [],
    statusText: statusBarText(status),
    summary: `jupyter-colab-remote ${status.version}, up ${formatDuration(status.uptime_seconds)}`
  };
}

/** A sentence a person can act on, for a failed request. */
export function errorMessage(error: IErrorInfo): string {
  if (error.kind === 'network') {
    return (
      'Cannot reach the Jupyter server: it may have stopped, or the connection (SSH ' +
      'forward) is down. Start it again with `jupyter colabremote serve`; this panel ' +
      'retries on its own.'
    );
  }
  if (error.kind === 'response') {
    const detail = error.message ? ` (${error.message})` : '';
    switch (error.status) {
      case 401:
      case 403:
        return (
          'The server refused this session (403 Forbidden): the token it was opened with ' +
          'has been rotated or revoked. Open JupyterLab again with a current URL, e.g. from ' +
          '`jupyter colabremote token rotate NAME`.'
        );
      case 404:
        return `Not found${detail}.`;
      default:
        return `The server answered ${error.status ?? 'an error'}${detail}.`;
    }
  }
  return error.message || 'Something went wrong.';
}
