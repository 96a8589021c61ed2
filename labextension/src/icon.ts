import { LabIcon } from '@jupyterlab/ui-components';

import colabSvg from '../style/icons/colab.svg';

/** Two interlocking "C"s, in Colab's colours. */
export const colabIcon = new LabIcon({
  name: 'jupyter-colab-remote:colab',
  svgstr: colabSvg
});
