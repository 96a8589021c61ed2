/**
 * Requests to the runtime's panel API, through JupyterLab's ServerConnection (which adds
 * the XSRF header and uses this session's login cookie).
 */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

import { IErrorInfo, IRotateResult, IStatus } from './model';

/** A current list of tokens: names and times (never the secrets). */
export interface ITokenList {
  tokens: {
    name: string;
    created: number;
    expires?: number | null;
    last_used?: number | null;
  }[];
  /** The token this browser session logged in with. */
  current: string | null;
}

/**
 * Send a request to a path under the server's base URL, with the app's server settings
 * (`app.serviceManager.serverSettings`); JSON body or null (204).
 */
export async function request<T>(
  settings: ServerConnection.ISettings,
  path: string,
  init: RequestInit = {}
): Promise<T> {
  const url = URLExt.join(settings.baseUrl, path);
  // Throws ServerConnection.NetworkError when there is no answer at all.
  const response = await ServerConnection.makeRequest(url, init, settings);
  if (!response.ok) {
    throw await ServerConnection.ResponseError.create(response);
  }
  const text = await response.text();
  return (text ? JSON.parse(text) : null) as T;
}

export function getStatus(
  settings: ServerConnection.ISettings
): Promise<IStatus> {
  return request<IStatus>(settings, 'colabremote/api/status');
}

export function getTokens(
  settings: ServerConnection.ISettings
): Promise<ITokenList> {
  return request<ITokenList>(settings, 'colabremote/api/tokens');
}

/** New secret for `name`; the server re-issues this session's login cookie. */
export function rotateToken(
  settings: ServerConnection.ISettings,
  name: string
): Promise<IRotateResult> {
  return request<IRotateResult>(
    settings,
    `colabremote/api/tokens/${encodeURIComponent(name)}/rotate`,
    { method: 'POST', body: '' }
  );
}

export async function shutdownKernel(
  settings: ServerConnection.ISettings,
  id: string
): Promise<void> {
  await request<null>(settings, `api/kernels/${encodeURIComponent(id)}`, {
    method: 'DELETE'
  });
}

/** Reduce whatever a request threw to what `errorMessage` needs. */
export function classifyError(error: unknown): IErrorInfo {
  if (error instanceof ServerConnection.NetworkError) {
    return { kind: 'network', message: error.message };
  }
  if (error instanceof ServerConnection.ResponseError) {
    return {
      kind: 'response',
      status: error.response.status,
      message: error.message
    };
  }
  if (error instanceof TypeError && /fetch|network/i.test(error.message)) {
    return { kind: 'network', message: error.message };
  }
  return {
    kind: 'other',
    message: error instanceof Error ? error.message : String(error)
  };
}
