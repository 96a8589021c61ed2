/**
 * The "Colab connection" panel: the URL to paste into Colab, token rotation, the running
 * kernels and the runtime's RAM / disk / GPU figures.
 */
import { Clipboard, Dialog, showDialog } from '@jupyterlab/apputils';
import { ServerConnection } from '@jupyterlab/services';
import { Message } from '@lumino/messaging';
import { Widget } from '@lumino/widgets';

import { classifyError, getTokens, rotateToken, shutdownKernel } from './api';
import { colabIcon } from './icon';
import {
  errorMessage,
  IErrorInfo,
  IGauge,
  IKernelRow,
  IPortRow,
  isRuntime,
  NO_PORTS_TEXT,
  tokenFromUrl,
  toView
} from './model';
import { StatusService } from './service';

/**
 * The token this JupyterLab page was opened with: the server settings' (from the page
 * config), else the `token` query parameter of the address the page was loaded from
 * (JupyterLab removes it from the address bar, but the navigation entry keeps it).
 */
export function sessionToken(
  settings: ServerConnection.ISettings
): string | null {
  const configured = settings.token;
  if (configured) {
    return configured;
  }
  try {
    const entries = performance.getEntriesByType('navigation');
    return entries.length ? tokenFromUrl(entries[0].name) : null;
  } catch {
    return null;
  }
}

function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  className = '',
  text = ''
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  if (className) {
    node.className = className;
  }
  if (text) {
    node.textContent = text;
  }
  return node;
}

export class ColabPanel extends Widget {
  constructor(service: StatusService) {
    super();
    this._service = service;
    this._token = sessionToken(service.serverSettings);
    this.id = 'colabremote-panel';
    this.title.label = 'Colab connection';
    this.title.caption =
      'The URL to paste into Colab, tokens, kernels and resources';
    this.title.icon = colabIcon;
    this.title.closable = true;
    this.addClass('jp-ColabRemote');
    this._build();
    service.changed.connect(this._render, this);
    this._render();
  }

  dispose(): void {
    if (this.isDisposed) {
      return;
    }
    this._service.setPanelVisible(false);
    this._service.changed.disconnect(this._render, this);
    super.dispose();
  }

  /** The URL shown (what a test or a person copies). */
  get url(): string {
    return this._urlNode.textContent || '';
  }

  // The service polls faster while the panel is visible (in the main area, not behind
  // another tab); the browser tab's own visibility is the poll's business.
  protected onAfterAttach(msg: Message): void {
    super.onAfterAttach(msg);
    if (this.isVisible) {
      this._service.setPanelVisible(true);
    }
    void this._loadTokenName();
  }

  protected onBeforeDetach(msg: Message): void {
    this._service.setPanelVisible(false);
    super.onBeforeDetach(msg);
  }

  protected onAfterShow(msg: Message): void {
    super.onAfterShow(msg);
    this._service.setPanelVisible(true);
  }

  protected onAfterHide(msg: Message): void {
    this._service.setPanelVisible(false);
    super.onAfterHide(msg);
  }

  private _build(): void {
    const content = el('div', 'jp-ColabRemote-content');
    const header = el('div', 'jp-ColabRemote-header');
    header.append(el('h2', '', 'Colab connection'), this._summaryNode);
    content.append(header, this._errorNode);

    const connect = this._connectNode;
    connect.append(
      el('h3', '', 'Connect Colab to this runtime'),
      el(
        'p',
        'jp-ColabRemote-help',
        'In Colab, choose Connect ▸ "Connect to a local runtime" and paste this URL:'
      )
    );
    const urlRow = el('div', 'jp-ColabRemote-urlRow');
    this._copyButton.addEventListener('click', () => this._copy());
    urlRow.append(this._urlNode, this._copyButton);
    const tokenRow = el('div', 'jp-ColabRemote-tokenRow');
    this._rotateButton.addEventListener('click', () => void this._rotate());
    tokenRow.append(this._rotateButton, this._tokenNameNode);
    connect.append(
      urlRow,
      this._hintNode,
      this._portNode,
      this._noticeNode,
      tokenRow
    );

    const resources = el('section', 'jp-ColabRemote-section');
    resources.append(
      el('h3', '', 'Resources'),
      this._gaugesNode,
      this._gpuNoteNode
    );

    const kernels = el('section', 'jp-ColabRemote-section');
    kernels.append(
      el('h3', '', 'Kernels'),
      this._kernelAdviceNode,
      this._kernelsNode
    );

    this._portsSection.append(
      el('h3', '', 'Forwarded ports'),
      this._portsHelpNode,
      this._portsNode
    );

    this._notRuntimeNode.hidden = true;
    content.append(
      this._notRuntimeNode,
      connect,
      this._portsSection,
      resources,
      kernels
    );
    this.node.appendChild(content);
  }

  private _render(): void {
    const service = this._service;
    if (
      !this._tokenName &&
      isRuntime(service.status) &&
      !service.error &&
      this.isAttached
    ) {
      void this._loadTokenName();
    }
    const error = this._actionError || service.error;
    this._errorNode.hidden = !error;
    this._errorNode.textContent = error ? errorMessage(error) : '';

    this._tokenNameNode.textContent = this._tokenName
      ? `Token: ${this._tokenName}. Rotating it gives a new URL; the current one stops working.`
      : '';
    this._rotateButton.disabled = !this._tokenName || this._busy;

    const status = service.status;
    if (!status) {
      this._summaryNode.textContent = error ? '' : 'Loading…';
      // Whether there is a URL to show at all (a runtime) is known from the first status.
      this._connectNode.hidden = true;
      this._urlNode.textContent = '';
      this._copyButton.disabled = true;
      return;
    }
    const view = toView(status, {
      token: this._token,
      basePath: new URL(service.serverSettings.baseUrl, location.href).pathname,
      now: new Date()
    });
    const updated = service.updated ? service.updated.toLocaleTimeString() : '';
    this._summaryNode.textContent = `${view.summary} · updated ${updated}`;
    this._setText(this._kernelAdviceNode, view.kernelAdvice);
    // Not a runtime: an explanation instead of a URL and token controls.
    this._setText(this._notRuntimeNode, view.notRuntime);
    this._connectNode.hidden = !view.runtime;

    // Right after a rotation, show the URL exactly as the server returned it.
    const rotated = this._rotated;
    this._urlNode.textContent =
      rotated && rotated.port === status.colab_port ? rotated.url : view.url;
    this._urlNode.classList.toggle('jp-mod-noToken', !view.hasToken);
    this._copyButton.disabled = false;
    this._setText(this._hintNode, view.hint);
    this._setText(this._portNode, view.portNote);
    this._setText(this._noticeNode, this._notice);

    this._gaugesNode.replaceChildren(...view.gauges.map(g => this._gauge(g)));
    this._setText(this._gpuNoteNode, view.gpuNote);
    this._kernelsNode.replaceChildren(this._kernelTable(view.kernels));
    this._portsSection.hidden = !view.runtime;
    this._portsHelpNode.hidden = !view.ports.length;
    // Rebuilt only when the ports changed: a link being clicked must not be replaced.
    const ports = JSON.stringify(view.ports);
    if (ports !== this._shownPorts) {
      this._shownPorts = ports;
      this._portsNode.replaceChildren(this._portList(view.ports));
    }
  }

  private _portList(rows: IPortRow[]): HTMLElement {
    if (!rows.length) {
      return el('p', 'jp-ColabRemote-empty', NO_PORTS_TEXT);
    }
    const list = el('ul', 'jp-ColabRemote-ports');
    for (const row of rows) {
      const item = el('li', 'jp-ColabRemote-port');
      item.dataset.port = String(row.port);
      item.append(el('span', 'jp-ColabRemote-portLabel', row.label));
      for (const link of row.links) {
        const a = el('a', 'jp-ColabRemote-portLink', link.text);
        a.href = link.url;
        a.target = '_blank';
        a.rel = 'noopener noreferrer';
        item.append(' → ', a);
      }
      if (row.note) {
        item.append(el('span', 'jp-ColabRemote-help', ` (${row.note})`));
      }
      list.appendChild(item);
    }
    return list;
  }

  private _setText(node: HTMLElement, text: string | null): void {
    node.hidden = !text;
    node.textContent = text || '';
  }

  private _gauge(g: IGauge): HTMLElement {
    // Label and percentage above the bar, the amounts (and any detail) below it.
    const node = el('div', `jp-ColabRemote-gauge jp-mod-${g.level}`);
    const labels = el('div', 'jp-ColabRemote-gaugeLabels');
    labels.append(
      el('span', 'jp-ColabRemote-gaugeLabel', g.label),
      el('span', 'jp-ColabRemote-gaugePercent', g.percentText)
    );
    const bar = el('div', 'jp-ColabRemote-bar');
    const fill = el('div', 'jp-ColabRemote-barFill');
    fill.style.width = `${g.percent ?? 0}%`;
    bar.appendChild(fill);
    const value = g.detail ? `${g.text} · ${g.detail}` : g.text;
    node.append(labels, bar, el('div', 'jp-ColabRemote-gaugeValue', value));
    node.title = `${g.label}: ${g.text} (${g.percentText})`;
    return node;
  }

  private _kernelTable(rows: IKernelRow[]): HTMLElement {
    if (!rows.length) {
      return el('p', 'jp-ColabRemote-empty', 'No kernels running.');
    }
    const table = el('table', 'jp-ColabRemote-kernels');
    const head = el('tr');
    for (const title of [
      'Kernel',
      'State',
      'Last activity',
      'Memory',
      'Connections',
      ''
    ]) {
      head.appendChild(el('th', '', title));
    }
    table.appendChild(el('thead')).appendChild(head);
    const body = table.appendChild(el('tbody'));
    for (const row of rows) {
      const tr = el('tr', 'jp-ColabRemote-kernelRow');
      tr.dataset.kernelId = row.id;
      tr.title = `Kernel ${row.id}`;
      tr.append(
        el('td', 'jp-ColabRemote-kernelName', row.name),
        el('td', `jp-ColabRemote-kernelState jp-mod-${row.state}`, row.state),
        el('td', '', row.lastActivity),
        el('td', '', row.memory),
        el('td', '', String(row.connections))
      );
      const button = el(
        'button',
        'jp-mod-styled jp-ColabRemote-shutdown',
        'Shut down'
      );
      button.disabled = this._busy;
      button.addEventListener('click', () => void this._shutdown(row));
      tr.appendChild(el('td')).appendChild(button);
      body.appendChild(tr);
    }
    return table;
  }

  private _copy(): void {
    const url = this.url;
    if (!url) {
      return;
    }
    Clipboard.copyToSystem(url);
    this._copyButton.textContent = 'Copied';
    window.setTimeout(() => {
      this._copyButton.textContent = 'Copy';
    }, 2000);
  }

  /** Which token this session uses (the one "Rotate" acts on). */
  private async _loadTokenName(): Promise<void> {
    // Only a runtime has tokens for Colab; the first good status decides.
    if (
      this._tokenName ||
      this._loadingTokenName ||
      !isRuntime(this._service.status)
    ) {
      return;
    }
    this._loadingTokenName = true;
    try {
      this._tokenName = (await getTokens(this._service.serverSettings)).current;
    } catch {
      // The status poll reports the same failure; the next good poll retries.
    } finally {
      this._loadingTokenName = false;
    }
    this._render();
  }

  private async _rotate(): Promise<void> {
    const name = this._tokenName;
    if (!name) {
      return;
    }
    const answer = await showDialog({
      title: `Rotate the token "${name}"?`,
      body:
        'A new secret replaces the current one at once: the URL shown now stops working, ' +
        'and Colab notebooks or other browsers connected with it must use the new URL. ' +
        'This JupyterLab session stays logged in.',
      buttons: [Dialog.cancelButton(), Dialog.warnButton({ label: 'Rotate' })]
    });
    if (!answer.button.accept) {
      return;
    }
    await this._act(async () => {
      const result = await rotateToken(this._service.serverSettings, name);
      this._token = result.token;
      this._rotated = {
        url: result.url,
        port: this._service.status?.colab_port ?? -1
      };
      this._notice =
        `New token for "${name}": the previous URL no longer works. ` +
        'The new one is shown once here; copy it now.';
    });
  }

  private async _shutdown(row: IKernelRow): Promise<void> {
    const answer = await showDialog({
      title: `Shut down the ${row.name} kernel?`,
      body: `Kernel ${row.id} and its variables are lost, for Colab and for JupyterLab.`,
      buttons: [
        Dialog.cancelButton(),
        Dialog.warnButton({ label: 'Shut down' })
      ]
    });
    if (!answer.button.accept) {
      return;
    }
    await this._act(() => shutdownKernel(this._service.serverSettings, row.id));
  }

  /** Run an action, show its error if any, and refresh the status afterwards. */
  private async _act(action: () => Promise<void>): Promise<void> {
    this._busy = true;
    this._actionError = null;
    this._render();
    try {
      await action();
    } catch (e) {
      this._actionError = classifyError(e);
    }
    this._busy = false;
    // Renders again (the action's error, if any, stays until the next action).
    await this._service.refresh();
  }

  private _service: StatusService;
  private _token: string | null;
  private _tokenName: string | null = null;
  private _loadingTokenName = false;
  private _rotated: { url: string; port: number } | null = null;
  private _notice: string | null = null;
  private _actionError: IErrorInfo | null = null;
  private _busy = false;
  private _shownPorts = '';

  private _summaryNode = el('p', 'jp-ColabRemote-summary');
  private _notRuntimeNode = el('p', 'jp-ColabRemote-notRuntime');
  private _connectNode = el(
    'section',
    'jp-ColabRemote-section jp-ColabRemote-connect'
  );
  private _kernelAdviceNode = el('p', 'jp-ColabRemote-kernelAdvice');
  private _errorNode = el('div', 'jp-ColabRemote-error');
  private _urlNode = el('code', 'jp-ColabRemote-url');
  private _copyButton = el(
    'button',
    'jp-mod-styled jp-mod-accept jp-ColabRemote-copy',
    'Copy'
  );
  private _hintNode = el('p', 'jp-ColabRemote-hint');
  private _portNode = el('p', 'jp-ColabRemote-help');
  private _noticeNode = el('p', 'jp-ColabRemote-notice');
  private _rotateButton = el(
    'button',
    'jp-mod-styled jp-mod-warn jp-ColabRemote-rotate',
    'Rotate token…'
  );
  private _tokenNameNode = el('span', 'jp-ColabRemote-help');
  private _gaugesNode = el('div', 'jp-ColabRemote-gauges');
  private _gpuNoteNode = el('p', 'jp-ColabRemote-help');
  private _kernelsNode = el('div', 'jp-ColabRemote-kernelList');
  private _portsSection = el(
    'section',
    'jp-ColabRemote-section jp-ColabRemote-portsSection'
  );
  private _portsNode = el('div', 'jp-ColabRemote-portList');
  private _portsHelpNode = el(
    'p',
    'jp-ColabRemote-help',
    "Web apps that kernels serve, reachable on the companion's machine:"
  );
}
