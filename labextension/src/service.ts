/**
 * The runtime's status, fetched on demand and polled in the background for the status
 * bar; the panel asks for a refresh every few seconds while it is visible.
 */
import { ISignal, Signal } from '@lumino/signaling';

import { classifyError, getStatus } from './api';
import { IErrorInfo, IStatus } from './model';

export class StatusService {
  /** The newest status document, or null before the first answer. */
  status: IStatus | null = null;
  /** The error of the newest attempt, or null when it succeeded. */
  error: IErrorInfo | null = null;
  /** When `status` was fetched. */
  updated: Date | null = null;

  private _changed = new Signal<this, void>(this);
  private _pending: Promise<void> | null = null;
  private _timer: number | null = null;

  /** Emitted after every attempt, successful or not. */
  get changed(): ISignal<this, void> {
    return this._changed;
  }

  /** Fetch the status now (concurrent calls share one request). */
  refresh(): Promise<void> {
    if (!this._pending) {
      this._pending = this._fetch().finally(() => {
        this._pending = null;
      });
    }
    return this._pending;
  }

  /** Poll every `intervalMs` while the browser tab is visible. */
  start(intervalMs: number): void {
    this.stop();
    this._timer = window.setInterval(() => {
      if (!document.hidden) {
        void this.refresh();
      }
    }, intervalMs);
    void this.refresh();
  }

  stop(): void {
    if (this._timer !== null) {
      window.clearInterval(this._timer);
      this._timer = null;
    }
  }

  private async _fetch(): Promise<void> {
    try {
      this.status = await getStatus();
      this.updated = new Date();
      this.error = null;
    } catch (e) {
      this.error = classifyError(e);
    }
    this._changed.emit();
  }
}
