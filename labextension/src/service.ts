/**
 * The runtime's status, kept fresh by one `Poll` for the panel and the status bar: every
 * 5 s while the panel is visible, else every 15 s for the status bar; backing off after
 * errors, standing by while the browser tab is hidden or nothing shows the figures.
 */
import { ServerConnection } from '@jupyterlab/services';
import { IPoll, Poll } from '@lumino/polling';
import { ISignal, Signal } from '@lumino/signaling';

import { classifyError, getStatus } from './api';
import { IErrorInfo, IStatus } from './model';

/** While the panel is visible. After errors: up to 15 s, so a recovery shows soon. */
export const PANEL_FREQUENCY: IPoll.Frequency = {
  interval: 5000,
  backoff: true,
  max: 15000
};

/** For the status bar alone. */
export const BACKGROUND_FREQUENCY: IPoll.Frequency = {
  interval: 15000,
  backoff: true,
  max: 60000
};

export class StatusService {
  constructor(serverSettings: ServerConnection.ISettings) {
    this.serverSettings = serverSettings;
    this._poll = new Poll({
      name: 'jupyter-colab-remote:status',
      auto: false,
      factory: () => this._fetch(),
      // Nothing shows the figures: no requests; else none while the browser tab is hidden.
      standby: () =>
        this._panelVisible || this._background ? 'when-hidden' : true
    });
    // Set here, not in the options: the constructor raises `max` to at least 30 s.
    this._poll.frequency = BACKGROUND_FREQUENCY;
  }

  /** The app's server settings, for every request to the server. */
  readonly serverSettings: ServerConnection.ISettings;
  /** The newest status document, or null before the first answer. */
  status: IStatus | null = null;
  /** The error of the newest attempt, or null when it succeeded. */
  error: IErrorInfo | null = null;
  /** When `status` was fetched. */
  updated: Date | null = null;

  /** Emitted after every attempt, successful or not. */
  get changed(): ISignal<this, void> {
    return this._changed;
  }

  /** Fetch the status now; resolves once it is in (concurrent calls share one request). */
  async refresh(): Promise<void> {
    await this._poll.refresh();
    await this._poll.tick;
  }

  /** Poll in the background too, for the status bar; the first fetch is now. */
  startBackground(): void {
    this._background = true;
    void this._poll.start();
  }

  /** The panel was shown (poll faster, fetch now) or hidden. */
  setPanelVisible(visible: boolean): void {
    this._panelVisible = visible;
    this._poll.frequency = visible ? PANEL_FREQUENCY : BACKGROUND_FREQUENCY;
    if (visible) {
      void this._poll.refresh();
    }
  }

  /** One poll: rejects on failure, so that the poll backs off. */
  private async _fetch(): Promise<void> {
    try {
      this.status = await getStatus(this.serverSettings);
      this.updated = new Date();
      this.error = null;
    } catch (e) {
      this.error = classifyError(e);
      throw e;
    } finally {
      this._changed.emit();
    }
  }

  private _background = false;
  private _panelVisible = false;
  private _changed = new Signal<this, void>(this);
  private _poll: Poll;
}
