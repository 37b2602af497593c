/** This build's version, as `/` and the OpenAPI document report it. */
export const VERSION = '0.1.0';
