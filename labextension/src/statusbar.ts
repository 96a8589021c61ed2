/** The status-bar item: "Colab: 1 client, 2 kernels". Click to open the panel. */
import { Widget } from '@lumino/widgets';

import { errorMessage, statusBarText } from './model';
import { StatusService } from './service';

export class ColabStatusItem extends Widget {
  constructor(service: StatusService, open: () => void) {
    super();
    this._service = service;
    this.addClass('jp-ColabRemote-statusItem');
    this.node.addEventListener('click', open);
    service.changed.connect(this._render, this);
    this._render();
  }

  dispose(): void {
    if (!this.isDisposed) {
      this._service.changed.disconnect(this._render, this);
    }
    super.dispose();
  }

  private _render(): void {
    const { status, error } = this._service;
    this.node.textContent = statusBarText(status, error);
    this.node.title = error
      ? errorMessage(error)
      : 'Colab clients connected to kernels, and running kernels. Click for the Colab connection panel.';
  }

  private _service: StatusService;
}
