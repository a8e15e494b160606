// The npm `xen-api` client ships no types: the part xenroam uses.
declare module "xen-api" {
  export interface XapiClient {
    connect(): Promise<void>;
    disconnect(): Promise<void>;
    call<T = unknown>(method: string, ...args: unknown[]): Promise<T>;
  }
  export function createClient(options: {
    url: string;
    auth: { user: string; password: string; sessionId?: string };
    allowUnauthorized?: boolean;
    transport?: "auto" | "json-rpc" | "xml-rpc";
    watchEvents?: false | string[];
    callTimeout?: number;
  }): XapiClient;
}

declare module "@vates/xml/parse" {
  export interface XmlNode {
    name: string;
    attributes?: Record<string, string>;
    children: Array<XmlNode | string>;
  }
  export function parseXml(
    xml: string,
    options?: { normalize?: boolean; strict?: boolean; trim?: boolean },
  ): XmlNode;
}

declare module "@vates/xml/format" {
  import type { XmlNode } from "@vates/xml/parse";
  export function formatXml(
    tree: XmlNode,
    options?: { includeDeclaration?: boolean; indent?: number | string },
  ): string;
}

declare module "@vates/xml-rpc/parser" {
  import type { XmlNode } from "@vates/xml/parse";
  export const xmlRpcParser: {
    parse(node: XmlNode): { methodName?: string; params?: unknown[]; fault?: unknown };
  };
}

declare module "@vates/xml-rpc/formatter" {
  import type { XmlNode } from "@vates/xml/parse";
  export const xmlRpcFormatter: {
    format_methodResponse(r: { params?: unknown[]; fault?: unknown }): XmlNode;
    format_methodCall(r: { methodName: string; params: unknown[] }): XmlNode;
  };
}
