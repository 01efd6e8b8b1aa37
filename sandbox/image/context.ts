/** What every image build step gets from its caller (the lead's CLI, or a test). */
export interface BuildContext {
  /** Root of the build cache: artefacts in <cacheDir>/images, downloads in <cacheDir>/downloads. */
  cacheDir: string;
  /** The mcpvisor checkout: sources (agent, guest files, bundle entries) are read from here, never written. */
  repoRoot: string;
  progress: (line: string) => void;
}
