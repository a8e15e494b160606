// The npm `xen-api` client ships no types: the part xenroam uses.
declare module "xen-api" {
  export interface XapiClient {
    connect(): Promise<void>;
    disconnect(): Promise<void>;
    call<T = unknown>(method: string, ...args: unknown[]): Promise<T>;
  }
  export function createClient(options: {
    url: string;
    auth: { user: string; password: string };
    allowUnauthorized?: boolean;
    transport?: "auto" | "json-rpc" | "xml-rpc";
    watchEvents?: false | string[];
    callTimeout?: number;
  }): XapiClient;
}
