/**
 * jupyter-colab-remote's JupyterLab extension: a launcher card, a command and a panel with
 * the URL to paste into Colab, plus a status-bar item counting Colab clients and kernels.
 */
import {
  ILayoutRestorer,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { ICommandPalette, WidgetTracker } from '@jupyterlab/apputils';
import { ILauncher } from '@jupyterlab/launcher';
import { IStatusBar } from '@jupyterlab/statusbar';

import { colabIcon } from './icon';
import { isRuntime } from './model';
import { ColabPanel } from './panel';
import { StatusService } from './service';
import { ColabStatusItem } from './statusbar';

export namespace CommandIDs {
  export const open = 'colabremote:open';
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'jupyter-colab-remote:plugin',
  description:
    'The Colab connection panel and status-bar item of jupyter-colab-remote.',
  autoStart: true,
  optional: [ILauncher, ICommandPalette, IStatusBar, ILayoutRestorer],
  activate: (
    app: JupyterFrontEnd,
    launcher: ILauncher | null,
    palette: ICommandPalette | null,
    statusBar: IStatusBar | null,
    restorer: ILayoutRestorer | null
  ) => {
    const service = new StatusService(app.serviceManager.serverSettings);
    const tracker = new WidgetTracker<ColabPanel>({ namespace: 'colabremote' });
    let panel: ColabPanel | null = null;

    app.commands.addCommand(CommandIDs.open, {
      label: 'Colab connection',
      caption:
        'The URL to paste into Colab, the token, kernels and resources of this runtime',
      icon: colabIcon,
      describedBy: { args: { type: 'object', properties: {} } },
      execute: () => {
        if (!panel || panel.isDisposed) {
          panel = new ColabPanel(service);
          void tracker.add(panel);
        }
        if (!panel.isAttached) {
          app.shell.add(panel, 'main');
        }
        app.shell.activateById(panel.id);
        return panel;
      }
    });

    launcher?.add({ command: CommandIDs.open, category: 'Other', rank: 100 });
    palette?.addItem({ command: CommandIDs.open, category: 'Colab' });
    restorer?.restore(tracker, {
      command: CommandIDs.open,
      name: () => 'colabremote'
    });

    if (statusBar) {
      const item = new ColabStatusItem(service, () => {
        void app.commands.execute(CommandIDs.open);
      });
      statusBar.registerStatusItem('jupyter-colab-remote:status', {
        item,
        align: 'left',
        rank: 100,
        // Hidden on a server that is not a runtime: there are no Colab clients to count.
        isActive: () => isRuntime(service.status),
        activeStateChanged: service.changed
      });
      service.startBackground();
    }
  }
};

export default plugin;
