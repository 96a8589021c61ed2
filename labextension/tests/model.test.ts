/** Unit tests for the panel's model (node's own test runner: `jlpm test`). */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import {
  colabUrl,
  errorMessage,
  formatAge,
  formatBytes,
  formatDuration,
  formatPercent,
  gauges,
  isRuntime,
  IStatus,
  level,
  NO_TOKEN_HINT,
  NOT_RUNTIME_MESSAGE,
  NOT_FORWARDED_NOTE,
  percent,
  portRows,
  statusBarText,
  tokenFromUrl,
  toView
} from '../src/model';

const GiB = 1024 ** 3;
const NOW = new Date('2025-01-01T12:00:00Z');

function status(overrides: Partial<IStatus> = {}): IStatus {
  return {
    version: '0.1.0',
    uptime_seconds: 3725,
    colab_port: 8888,
    forwards: {},
    kernels: [
      {
        id: 'k1',
        name: 'python3',
        execution_state: 'idle',
        last_activity: '2025-01-01T11:59:30Z',
        connections: 1,
        memory_bytes: 100 * 1024 ** 2
      },
      {
        id: 'k2',
        name: null,
        execution_state: null,
        last_activity: null,
        connections: 0,
        memory_bytes: null
      }
    ],
    connections: {
      colab_kernel_websockets: 1,
      kernel_websockets: 1,
      http_over_websocket: 0
    },
    resources: {
      memory: { totalBytes: 16 * GiB, freeBytes: 12 * GiB, kernels: [] },
      disks: [
        {
          filesystem: {
            label: 'kernel',
            totalBytes: 100 * GiB,
            usedBytes: 95 * GiB
          }
        }
      ],
      gpus: []
    },
    ...overrides
  };
}

describe('colabUrl', () => {
  it('uses localhost, the port, the base path and the token', () => {
    assert.equal(
      colabUrl(9000, '/', 'abc'),
      'http://localhost:9000/?token=abc'
    );
    assert.equal(
      colabUrl(9000, '/a%40b/', 'f00'),
      'http://localhost:9000/a%40b/?token=f00'
    );
  });
  it('normalizes the base path', () => {
    assert.equal(colabUrl(1, '', 't'), 'http://localhost:1/?token=t');
    assert.equal(colabUrl(1, 'lab', 't'), 'http://localhost:1/lab/?token=t');
  });
  it('leaves the token out when none is known', () => {
    assert.equal(colabUrl(9000, '/', null), 'http://localhost:9000/');
    assert.equal(colabUrl(9000, '/', ''), 'http://localhost:9000/');
  });
  it('encodes odd characters in a token', () => {
    assert.equal(
      colabUrl(1, '/', 'a b&c'),
      'http://localhost:1/?token=a%20b%26c'
    );
  });
});

describe('tokenFromUrl', () => {
  it('reads the token query parameter', () => {
    assert.equal(
      tokenFromUrl('http://127.0.0.1:8888/lab?token=abc&x=1'),
      'abc'
    );
  });
  it('returns null without one, or for junk', () => {
    assert.equal(tokenFromUrl('http://127.0.0.1:8888/lab'), null);
    assert.equal(tokenFromUrl('http://127.0.0.1:8888/lab?token='), null);
    assert.equal(tokenFromUrl(''), null);
    assert.equal(tokenFromUrl('not a url'), null);
  });
});

describe('formatting', () => {
  it('formats bytes in binary units', () => {
    assert.equal(formatBytes(0), '0 B');
    assert.equal(formatBytes(512), '512 B');
    assert.equal(formatBytes(1536), '1.5 KiB');
    assert.equal(formatBytes(512 * 1024 ** 2), '512 MiB');
    assert.equal(formatBytes(15.6 * GiB), '15.6 GiB');
    assert.equal(formatBytes(2 * 1024 ** 4), '2.0 TiB');
    assert.equal(formatBytes(null), '—');
    assert.equal(formatBytes(undefined), '—');
    assert.equal(formatBytes(-1), '—');
    assert.equal(formatBytes(NaN), '—');
  });
  it('computes and formats percentages', () => {
    assert.equal(percent(1, 4), 25);
    assert.equal(percent(5, 4), 100);
    assert.equal(percent(1, 0), null);
    assert.equal(formatPercent(25), '25%');
    assert.equal(formatPercent(99.6), '100%');
    assert.equal(formatPercent(0.2), '<1%');
    assert.equal(formatPercent(0), '0%');
    assert.equal(formatPercent(null), '—');
  });
  it('picks a level from a percentage', () => {
    assert.equal(level(10), 'ok');
    assert.equal(level(75), 'warn');
    assert.equal(level(90), 'high');
    assert.equal(level(null), 'ok');
  });
  it('formats durations and ages', () => {
    assert.equal(formatDuration(45), '45 s');
    assert.equal(formatDuration(180), '3 min');
    assert.equal(formatDuration(3725), '1 h 2 min');
    assert.equal(formatDuration(7200), '2 h');
    assert.equal(formatDuration(3 * 86400 + 4 * 3600), '3 d 4 h');
    assert.equal(formatAge('2025-01-01T11:59:30Z', NOW), '30 s ago');
    assert.equal(formatAge('2025-01-01T11:59:58Z', NOW), 'just now');
    assert.equal(formatAge('2025-01-01T12:00:30Z', NOW), 'just now');
    assert.equal(formatAge(null, NOW), '—');
    assert.equal(formatAge('yesterday-ish', NOW), '—');
  });
});

describe('statusBarText', () => {
  it('counts Colab clients and kernels', () => {
    assert.equal(statusBarText(status()), 'Colab: 1 client, 2 kernels');
    const none = status({
      kernels: [],
      connections: {
        colab_kernel_websockets: 0,
        kernel_websockets: 0,
        http_over_websocket: 0
      }
    });
    assert.equal(statusBarText(none), 'Colab: 0 clients, 0 kernels');
  });
  it('says offline after an error, and waits before the first answer', () => {
    assert.equal(
      statusBarText(status(), { kind: 'network' }),
      'Colab: offline'
    );
    assert.equal(statusBarText(null), 'Colab: …');
  });
  it('claims no Colab clients on a server that is not a runtime', () => {
    assert.equal(
      statusBarText(status({ runtime: false })),
      'Colab: not a runtime'
    );
  });
});

describe('isRuntime', () => {
  it('is true for a runtime and for servers predating the field, false otherwise', () => {
    assert.equal(isRuntime(status({ runtime: true })), true);
    assert.equal(isRuntime(status()), true);
    assert.equal(isRuntime(status({ runtime: false })), false);
    assert.equal(isRuntime(null), false);
  });
});

describe('gauges', () => {
  it('shows RAM and disk with levels', () => {
    const [ram, disk] = gauges(status().resources);
    assert.deepEqual(
      [ram.label, ram.text, ram.percentText, ram.level],
      ['RAM', '4.0 GiB of 16.0 GiB', '25%', 'ok']
    );
    assert.deepEqual(
      [disk.label, disk.text, disk.percentText, disk.level],
      ['Disk', '95.0 GiB of 100 GiB', '95%', 'high']
    );
  });
  it('adds one gauge per GPU with its utilization', () => {
    const gpu = {
      name: 'Tesla T4',
      memoryUsedBytes: 12 * GiB,
      memoryTotalBytes: 16 * GiB,
      gpuUtilization: 0.35,
      memoryUtilization: 0.2
    };
    const resources = {
      ...status().resources,
      gpus: [gpu, { ...gpu, name: 'A100' }]
    };
    const out = gauges(resources);
    assert.equal(out.length, 4);
    assert.equal(out[2].label, 'GPU 0: Tesla T4');
    assert.equal(out[2].level, 'warn');
    assert.equal(out[2].detail, 'utilization 35%');
    assert.equal(out[3].label, 'GPU 1: A100');
    assert.equal(gauges(null).length, 0);
  });
});

describe('toView', () => {
  it('builds the panel from a status document and the session token', () => {
    const view = toView(status(), { token: 'abc', basePath: '/', now: NOW });
    assert.equal(view.url, 'http://localhost:8888/?token=abc');
    assert.equal(view.hasToken, true);
    assert.equal(view.hint, null);
    assert.equal(view.portNote, null);
    assert.equal(view.gpuNote, 'No GPU found.');
    assert.equal(view.statusText, 'Colab: 1 client, 2 kernels');
    assert.equal(view.summary, 'jupyter-colab-remote 0.1.0, up 1 h 2 min');
    assert.deepEqual(view.kernels[0], {
      id: 'k1',
      name: 'python3',
      state: 'idle',
      lastActivity: '30 s ago',
      memory: '100 MiB',
      connections: 1
    });
    assert.deepEqual(
      [view.kernels[1].name, view.kernels[1].state, view.kernels[1].memory],
      ['unknown', 'unknown', '—']
    );
  });
  it('uses the forwarded port and says where it comes from', () => {
    const forwarded = status({
      colab_port: 9000,
      forwards: { laptop: { local_port: 9000, reported: 1 } }
    });
    const view = toView(forwarded, { token: 't', basePath: '/', now: NOW });
    assert.equal(view.url, 'http://localhost:9000/?token=t');
    assert.match(view.portNote ?? '', /9000.*laptop/);
  });
  it('shows no URL, port or token hint on a server that is not a runtime', () => {
    const forwarded = { laptop: { local_port: 9000, reported: 1 } };
    const view = toView(status({ runtime: false, forwards: forwarded }), {
      token: 'abc',
      basePath: '/',
      now: NOW
    });
    assert.equal(view.runtime, false);
    assert.equal(view.url, '');
    assert.equal(view.hasToken, false);
    assert.equal(view.hint, null);
    assert.equal(view.portNote, null);
    assert.equal(view.notRuntime, NOT_RUNTIME_MESSAGE);
    assert.match(view.notRuntime ?? '', /jupyter colabremote serve/);
    assert.match(view.notRuntime ?? '', /jupyter colabremote start HOST/);
    assert.equal(view.kernels.length, 2);
  });
  it('passes on the advice when no kernel can start', () => {
    const advice =
      'This runtime has no Jupyter kernel to start: ... -m pip install ipykernel';
    const kernels_available = {
      python: false,
      kernelspecs: [],
      default: 'python3',
      advice
    };
    const view = toView(status({ runtime: true, kernels_available }), {
      token: 't',
      basePath: '/',
      now: NOW
    });
    assert.equal(view.kernelAdvice, advice);
    assert.equal(view.notRuntime, null);
    assert.equal(
      toView(status(), { token: 't', basePath: '/', now: NOW }).kernelAdvice,
      null
    );
  });
  it('shows the URL without a token, and a hint, when no token is known', () => {
    const view = toView(status(), { token: null, basePath: '/', now: NOW });
    assert.equal(view.url, 'http://localhost:8888/');
    assert.equal(view.hasToken, false);
    assert.equal(view.hint, NO_TOKEN_HINT);
    assert.match(view.hint ?? '', /Rotate/);
  });
});

describe('errorMessage', () => {
  it('explains a refused token', () => {
    const text = errorMessage({
      kind: 'response',
      status: 403,
      message: 'Forbidden'
    });
    assert.match(text, /403/);
    assert.match(text, /rotated or revoked/);
  });
  it('explains a server that is gone', () => {
    const text = errorMessage({ kind: 'network', message: 'Failed to fetch' });
    assert.match(text, /Cannot reach the Jupyter server/);
  });
  it('passes on the server message for other statuses', () => {
    assert.equal(
      errorMessage({
        kind: 'response',
        status: 404,
        message: "no token named 'x'"
      }),
      "Not found (no token named 'x')."
    );
    assert.equal(
      errorMessage({ kind: 'response', status: 500, message: 'boom' }),
      'The server answered 500 (boom).'
    );
    assert.equal(errorMessage({ kind: 'other', message: 'odd' }), 'odd');
    assert.equal(errorMessage({ kind: 'other' }), 'Something went wrong.');
  });
});

describe('portRows', () => {
  it('names the process and links each forward, in port order', () => {
    const rows = portRows([
      {
        port: 8501,
        source: 'explicit',
        address: null,
        pid: null,
        process: null,
        kernel_id: null,
        kernel_name: null,
        forwards: [{ client: 'laptop', local_port: 18501 }]
      },
      {
        port: 6006,
        source: 'kernel',
        address: '127.0.0.1',
        pid: 4242,
        process: 'tensorboard',
        kernel_id: 'k1',
        kernel_name: 'python3',
        forwards: [{ client: 'laptop', local_port: 6007 }]
      }
    ]);
    assert.deepEqual(
      rows.map(r => [r.port, r.label, r.links, r.note]),
      [
        [
          6006,
          'tensorboard (kernel python3, pid 4242), port 6006',
          [{ url: 'http://localhost:6007/', text: 'localhost:6007' }],
          null
        ],
        [
          8501,
          'port 8501 (--forward)',
          [{ url: 'http://localhost:18501/', text: 'localhost:18501' }],
          null
        ]
      ]
    );
  });

  it('says when no companion forwards a port, and copes with old servers', () => {
    const [row] = portRows([
      {
        port: 7860,
        source: 'kernel',
        address: '0.0.0.0',
        pid: 7,
        process: 'gradio',
        kernel_id: 'k1',
        kernel_name: 'python3',
        forwards: []
      }
    ]);
    assert.equal(row.note, NOT_FORWARDED_NOTE);
    assert.deepEqual(row.links, []);
    assert.deepEqual(portRows(undefined), []);
    assert.deepEqual(
      toView(status(), { token: null, basePath: '/', now: NOW }).ports,
      []
    );
  });
});
