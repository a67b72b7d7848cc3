import { StrictMode } from 'react';
import { createRoot } from 'react-dom/client';
import { endpointFromPage } from '../endpoint';
import { TOPICS, isTopic, type Topic } from '../frames';
import { App } from './App';
import { readyzUrl } from './readiness';
import './styles.css';

/** `?topics=a,b` (or `none`) picks the topics; by default all seven on /ws/connect, none extra elsewhere. */
function initialTopics(search: string, endpoint: string): Topic[] {
  const asked = new URLSearchParams(search).get('topics');
  if (asked !== null) return asked.split(',').map((t) => t.trim()).filter(isTopic);
  return new URL(endpoint.replace(/^ws/, 'http')).pathname === '/ws/connect' ? [...TOPICS] : [];
}

/**
 * A bridge with authentication on needs a token: `?token=` on the page's URL
 * (what `clearpath cluster --auth` prints). It is kept for this tab only and
 * taken out of the address bar, so it is not bookmarked or shared by accident.
 */
function pageToken(): string | undefined {
  const url = new URL(window.location.href);
  const given = url.searchParams.get('token');
  if (given) {
    sessionStorage.setItem('clearpath.token', given);
    url.searchParams.delete('token');
    window.history.replaceState(null, '', url);
  }
  return sessionStorage.getItem('clearpath.token') ?? undefined;
}

const token = pageToken();
const endpoint = endpointFromPage(window.location);
const root = document.getElementById('root');
if (root) {
  createRoot(root).render(
    <StrictMode>
      <App
        endpoint={endpoint}
        initialTopics={initialTopics(window.location.search, endpoint)}
        token={token}
        readyzUrl={readyzUrl(window.location.origin)}
      />
    </StrictMode>,
  );
}
